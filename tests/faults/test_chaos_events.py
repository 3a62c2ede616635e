"""Fault tier: object events are durable like results. An event whose ``end`` falls in a
broker outage is spooled and arrives after it, in order, before the events that followed.

The demo clip loops every 10 s; at the loop the red square jumps back to the left edge,
which ends its event and starts a new one. The broker is down across that moment.
"""

from __future__ import annotations

import time

import pytest

from tests.support.broker import MqttSubscriber
from tests.support.chaos import figure
from tests.support.paths import REPO

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

DEMO = REPO / "models" / "demo"
CLIP_S = 10.0  # 150 frames at 15 fps


def test_an_event_ending_during_an_outage_arrives_after_it(mqtt_broker_factory, edge_daemon):
    broker = mqtt_broker_factory("mosquitto", persistent=True)
    daemon = edge_daemon(
        broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        events={"max_age": 0.5, "snapshots": False},
        mqtt={"publish_results": "off"},
    )
    topics = daemon.topics
    sub = MqttSubscriber(broker.host, broker.port, [topics.events], persistent=True).start()
    try:
        first = sub.wait_for(
            topics.events, lambda m: m.json()["label"] == "red" and m.json()["type"] == "new", 30
        ).json()
        broker.stop()
        down_at = time.time()
        # Down across the clip's loop, when red ends and starts again (about 10 s after
        # its first event), plus margin: the daemon keeps detecting and spools meanwhile.
        time.sleep(CLIP_S + 2.0)
        broker.start()
        up_at = time.time()

        def red_events():
            return [m.json() for m in sub.on(topics.events) if m.json()["label"] == "red"]

        # Both the next red event and the end of the first one: the end is emitted
        # max_age after the jump, so it comes after the next event's new, not before.
        sub.wait_for(
            topics.events,
            lambda m: (
                {("new", False), ("end", True)}
                <= {(e["type"], e["id"] == first["id"]) for e in red_events()}
            ),
            timeout=30,
        )
    finally:
        sub.stop()
    assert daemon.alive()
    red = red_events()
    ended = [e for e in red if e["id"] == first["id"] and e["type"] == "end"]
    assert ended, f"the end of {first['id']} never arrived: {red}"
    # Emitted while the broker was down, so it can only have come through the spool.
    assert down_at < ended[0]["end_time"] < up_at, "the end did not fall in the outage"
    # Its event's messages arrived in the order they were emitted: new (at least once,
    # QoS 1 may repeat the one in flight when the broker went), updates, then the end.
    kinds = [e["type"] for e in red if e["id"] == first["id"]]
    assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("end") == 1, kinds
    assert "new" not in kinds[kinds.index("new") + kinds.count("new") :], kinds
    figure(
        "events_outage",
        outage_s=up_at - down_at,
        end_in_outage_s=ended[0]["end_time"] - down_at,
        red_events=len(red),
    )
