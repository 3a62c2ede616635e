"""Tier 3: a broker outage loses no result and reorders none.

mosquitto (with persistence) is stopped for about 5 s while the daemon runs on the demo
clip, then restarted on the same port. The subscriber holds a persistent session
(clean_session=False, QoS 1) so that the broker queues for it whatever the daemon
replays before the subscriber itself has reconnected: what it receives is then exactly
what the daemon delivered, and any gap is the daemon's.

Why contiguous frame ids are the right assertion: with ``publish_every_frame`` every
processed frame is published, and the camera numbers every frame it reads; so the ids
are contiguous when the pipeline processed every captured frame. A frame the camera's
latest-frame slot replaced (on a loaded machine) is counted in its ``dropped`` counter and
leaves a gap; so every gap must be covered by that counter, and an uncounted gap is a lost
result.

A daemon stopped during an outage leaves its undelivered results in the on-disk spool;
the next run on the same state dir delivers them first.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.support.broker import MqttSubscriber, wait_until
from tests.support.chaos import first_occurrences
from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DEMO = REPO / "models" / "demo"
OUTAGE_S = 5.0


def availability(sub: MqttSubscriber, topics) -> list[str]:
    """The ``available`` payloads received so far."""
    return [m.payload.decode() for m in sub.on(topics.available)]


def test_results_produced_during_an_outage_arrive_afterwards_in_order(
    mqtt_broker_factory, edge_daemon
):
    broker = mqtt_broker_factory("mosquitto", persistent=True)
    daemon = edge_daemon(
        broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        mqtt={"publish_every_frame": True},
    )
    topics = daemon.topics
    sub = MqttSubscriber(
        broker.host, broker.port, [topics.results, topics.available, topics.status], persistent=True
    ).start()
    try:
        sub.wait_count(topics.results, 15, timeout=20)
        outage_start = time.time()
        broker.stop()
        time.sleep(OUTAGE_S)
        before = len(availability(sub, topics))
        broker.start()
        outage_end = time.time()
        restarted = time.monotonic()
        # The daemon says "online" again right after its CONNACK. (mosquitto publishes
        # the daemon's will, "offline", when it goes down, and the subscriber's
        # re-subscription redelivers the retained value: only a new "online" counts.)
        wait_until(
            lambda: "online" in availability(sub, topics)[before:], 10, "daemon online again"
        )
        reconnect_s = time.monotonic() - restarted
        # The spool is replayed before anything newer is sent: the first result captured
        # after the restart marks the end of the replay.
        sub.wait_for(topics.results, lambda m: m.json()["timestamp"] > outage_end, timeout=20)
        replayed_s = time.monotonic() - restarted
        sub.wait_for(topics.results, lambda m: m.json()["timestamp"] > outage_end + 1.0, timeout=20)
        assert daemon.stop(timeout=10) == 0
        time.sleep(0.5)  # the final in-flight results and status
    finally:
        sub.stop()

    results = [m.json() for m in sub.on(topics.results)]
    ids = [r["frame_id"] for r in results]
    unique = first_occurrences(ids)
    during = [r for r in results if outage_start <= r["timestamp"] <= outage_end]
    during_ids = {r["frame_id"] for r in during}
    missing = sorted(set(range(unique[0], unique[-1] + 1)) - set(unique))
    final = sub.on(topics.status)[-1].json()
    dropped = final["cameras"]["cam0"]["dropped"]
    print(
        f"outage {OUTAGE_S:.0f}s: results captured during the outage {len(during_ids)}, "
        f"all received afterwards; total received {len(ids)} ({len(unique)} distinct, "
        f"duplicates {len(ids) - len(unique)}), lost {len(missing)}; camera dropped "
        f"{dropped}; daemon back online {reconnect_s:.2f}s after the broker restart, "
        f"spool replayed, live results within {replayed_s:.2f}s"
    )
    seen = availability(sub, topics)
    assert seen[0] == "online" and seen[-1] == "offline", seen
    assert final["state"] == "stopped"
    # ~75 frames at 15 fps were produced while the broker was down.
    assert len(during_ids) >= OUTAGE_S * 15 * 0.8, len(during_ids)
    assert unique == sorted(unique), "results arrived out of order"
    # Every gap must be a frame the camera counted as dropped (never processed, so never a
    # result); a result lost in delivery would be a gap nobody counted. Usually both are 0.
    assert len(missing) <= dropped, f"lost results: {missing} (camera dropped {dropped})"
    assert during_ids <= set(unique)
    assert unique[0] <= 15 and unique[-1] >= max(during_ids) + 15


def test_results_spooled_at_stop_are_delivered_by_the_next_run(mqtt_broker_factory, edge_daemon):
    broker = mqtt_broker_factory("mosquitto", persistent=True)
    first = edge_daemon(
        broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        mqtt={"publish_every_frame": True},
    )
    topics = first.topics
    sub = MqttSubscriber(broker.host, broker.port, [topics.results], persistent=True).start()
    try:
        sub.wait_count(topics.results, 10, timeout=20)
        broker.stop()
        time.sleep(2.0)  # ~30 results go to the spool
        t0 = time.monotonic()
        assert first.stop(timeout=10) == 0
        stop_s = time.monotonic() - t0
        # The publisher's last words: what it left in the on-disk spool.
        pending = int(re.findall(r"'spool_pending': (\d+)", first.log())[-1])
        assert pending >= 20, pending
        broker.start()
        # The same state dir (so the same spool), a fresh process.
        second = edge_daemon(
            broker.port,
            DEMO / "clip.avi",
            DEMO / "color_blobs.tflite",
            DEMO / "labels.txt",
            start=False,
            mqtt={"publish_every_frame": True},
        )
        second.write_config(device={"state_dir": first.sections["device"]["state_dir"]})
        second.start()
        restarted = time.time()
        sub.wait_for(topics.results, lambda m: m.json()["timestamp"] > restarted + 1.0, 20)
        assert second.stop(timeout=10) == 0
    finally:
        sub.stop()
    results = [m.json() for m in sub.on(topics.results)]
    old = [r for r in results if r["timestamp"] < restarted]
    new = [r for r in results if r["timestamp"] >= restarted]
    old_ids = first_occurrences([r["frame_id"] for r in old])
    # The old run's results all arrive, in order, before any of the new run's.
    assert old_ids == list(range(old_ids[0], old_ids[-1] + 1)), "lost spooled results"
    assert len(old_ids) >= 10 + 20
    last_old = max(i for i, r in enumerate(results) if r["timestamp"] < restarted)
    first_new = min(i for i, r in enumerate(results) if r["timestamp"] >= restarted)
    assert last_old < first_new, "new results overtook the spooled ones"
    assert new[0]["frame_id"] <= 15  # the new process numbers its frames from 0 again
    print(
        f"stop during outage: SIGTERM exit in {stop_s:.2f}s with {pending} results spooled; "
        f"{len(old_ids)} results of the first run delivered by the second, before its "
        f"{len(new)} own"
    )
