"""Tier 3: objects, not frames: the daemon tracks the demo clip's blobs and publishes
events and retained counts that a real subscriber reads back.

The demo clip (models/demo/clip_truth.json) moves a red square from the left edge to
the right over its 10 s and loops: red leaves the zone "left" half-way, and at the loop
it jumps back, which ends its event and starts a new one. Green and blue barely move
across the loop, so their events go on.
"""

from __future__ import annotations

import pytest

from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DEMO = REPO / "models" / "demo"
LEFT_HALF = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]


def test_events_and_counts_follow_the_clip(mqtt_broker, mqtt_subscriber, edge_daemon):
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        events={"update_interval": 2.0, "min_hits": 2, "max_age": 0.6, "labels": ["red"]},
        zone=[{"name": "left", "camera": "cam0", "points": LEFT_HALF, "labels": ["red"]}],
    )
    sub, topics = mqtt_subscriber, daemon.topics

    def events(label=None):
        out = [m.json() for m in sub.on(topics.events)]
        return [e for e in out if label is None or e["label"] == label]

    # Red ends when the clip loops (frame 150 = 10 s) and starts again as a new event.
    sub.wait_for(topics.events, lambda m: m.json()["type"] == "end", timeout=40)
    sub.wait_for(
        topics.events,
        lambda m: (
            m.json()["type"] == "new" and len([e for e in events("red") if e["type"] == "new"]) >= 2
        ),
        timeout=20,
    )
    red = events("red")
    first_id = red[0]["id"]
    assert red[0]["type"] == "new" and red[0]["zones"] == ["left"]
    first = [e for e in red if e["id"] == first_id]
    assert [e["type"] for e in first][-1] == "end"
    left = [e for e in first if e["type"] == "update" and e["zones"] == []]
    assert left, f"no update when red left the zone: {first}"
    end = first[-1]
    assert end["entered_zones"] == ["left"] and end["end_time"] > end["start_time"]
    assert end["top_score"] >= max(e["score"] for e in first)
    later = [e for e in red if e["id"] != first_id]
    assert later[0]["type"] == "new" and later[0]["track_id"] != red[0]["track_id"]
    # Green and blue stay put across the loop: one event each, never ended.
    for label in ("green", "blue"):
        evs = events(label)
        assert {e["id"] for e in evs} == {evs[0]["id"]}
        assert all(e["type"] != "end" for e in evs)
    # Far fewer event messages than frames: nothing goes out at frame rate.
    frames = len(sub.on(topics.results))
    assert len(events()) < frames / 5, (len(events()), frames)

    # Counts are retained and change only when something changes.
    for place, label, value in (("cam0", "all", b"3"), ("cam0", "green", b"1")):
        assert daemon_retained(mqtt_broker, topics.count(place, label)) == value
    red_zone = [m.payload for m in sub.on(topics.count("left", "red"))]
    assert red_zone[:3] == [b"0", b"1", b"0"] or red_zone[:2] == [b"1", b"0"], red_zone
    assert all(a != b for a, b in zip(red_zone, red_zone[1:])), "a count repeated itself"

    # A clean stop ends every open event (durably, before going offline).
    assert daemon.stop(timeout=15) == 0
    open_ids = {e["id"] for e in events()} - {e["id"] for e in events() if e["type"] == "end"}
    assert open_ids == set(), f"events left open after the stop: {open_ids}"


def test_objects_end_when_the_camera_stops_giving_frames(mqtt_broker, mqtt_subscriber, edge_daemon):
    """The clip is not looped: it ends with green and blue in view, and no frame ever
    says they left. Their events end and the counts fall to 0 (occupancy OFF) rather
    than staying as they were until the daemon stops."""
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        camera={"loop": False},
        events={"max_age": 0.6, "labels": ["green"]},
        mqtt={"publish_results": "off"},
    )
    from tests.support.broker import wait_until

    sub, topics = mqtt_subscriber, daemon.topics
    green, every = topics.count("cam0", "green"), topics.count("cam0", "all")
    sub.wait_for(green, lambda m: m.payload == b"1", timeout=30)
    mark = len(sub.on(every))  # the counts start at 0: what comes after the 1 counts

    def ends() -> set[str]:
        return {e.json()["label"] for e in sub.on(topics.events) if e.json()["type"] == "end"}

    wait_until(lambda: sub.on(green)[-1].payload == b"0", 40, "green count 0")
    wait_until(lambda: [m.payload for m in sub.on(every)[mark:]][-1:] == [b"0"], 10, "all 0")
    wait_until(lambda: {"green", "blue"} <= ends(), 10, "green and blue events ended")
    assert daemon.alive()
    assert daemon.stop(timeout=15) == 0


def test_counts_a_killed_run_left_read_0_after_the_restart(
    mqtt_broker, mqtt_subscriber, edge_daemon
):
    """SIGKILL (a power cut, the watchdog) with objects in view leaves their retained
    counts at 1. The next run, whose camera is down, still resets them: those of
    events.labels and "all" (which used to wait for a first frame) and "green", which
    no config names (it used to read 1 until a green object came and went again)."""
    import signal

    from tests.support.broker import wait_until

    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        events={"labels": ["red"]},
        mqtt={"publish_results": "off"},
    )
    topics = daemon.topics
    green, every = topics.count("cam0", "green"), topics.count("cam0", "all")
    mqtt_subscriber.wait_for(green, lambda m: m.payload == b"1", timeout=30)
    mqtt_subscriber.wait_for(every, lambda m: m.payload == b"3", timeout=10)
    daemon.stop(signal.SIGKILL, timeout=10)
    daemon.kill_group()
    assert daemon_retained(mqtt_broker, green) == b"1"  # what the killed run left
    daemon.proc = None
    daemon.write_config(camera={"source": "rtsp://127.0.0.1:9/down"})  # nothing answers
    daemon.start()
    for topic in (green, every):
        wait_until(lambda t=topic: daemon_retained(mqtt_broker, t) == b"0", 30, f"{topic} 0")
    assert daemon.stop(timeout=15) == 0


def daemon_retained(broker, topic: str) -> bytes:
    """What a subscriber connecting now gets on ``topic`` (the retained value)."""
    from tests.support.broker import MqttSubscriber

    late = MqttSubscriber(broker.host, broker.port, [topic]).start()
    try:
        msg = late.wait_for(topic, timeout=5)
    finally:
        late.stop()
    assert msg.retain
    return msg.payload


def test_events_off_publishes_no_events(mqtt_broker, mqtt_subscriber, edge_daemon):
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        events={"enabled": False},
    )
    mqtt_subscriber.wait_count(daemon.topics.results, 20, timeout=30)
    assert daemon.stop(timeout=15) == 0
    assert mqtt_subscriber.on(daemon.topics.events) == []
    counts = [
        m.topic
        for m in mqtt_subscriber.messages
        if m.topic.startswith(f"{daemon.topics.base}/cam0/") and "/detect/" not in m.topic
    ]
    assert counts == []


def test_detect_switch_stops_and_resumes_detection_and_survives_a_restart(
    mqtt_broker, mqtt_subscriber, edge_daemon
):
    from tests.support.broker import wait_until
    from tests.support.updates_e2e import Operator

    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        events={"max_age": 0.5},
        mqtt={"publish_results": "off"},
    )
    sub, topics = mqtt_subscriber, daemon.topics
    state_topic = f"{topics.base}/cam0/detect/state"
    sub.wait_for(state_topic, lambda m: m.payload == b"ON", timeout=20)
    sub.wait_for(topics.count("cam0", "all"), lambda m: m.payload == b"3", timeout=20)
    operator = Operator(mqtt_broker.host, mqtt_broker.port)
    try:
        operator.publish(f"{topics.base}/cmd/cam0/detect/set", b"OFF")
        sub.wait_for(state_topic, lambda m: m.payload == b"OFF", timeout=10)
        # Nothing is seen any more: every object ends and the count falls to 0.
        all_topic = topics.count("cam0", "all")
        wait_until(lambda: sub.on(all_topic)[-1].payload == b"0", 10, "count 0")

        def ended():
            return {e.json()["label"] for e in sub.on(topics.events) if e.json()["type"] == "end"}

        # The retained count and the events are separate topics: their order is not promised.
        wait_until(lambda: ended() >= {"red", "green", "blue"}, 10, "three end events")
        assert ended() == {"red", "green", "blue"}
        assert daemon.alive()
        assert sub.on(topics.results) == []  # publish_results = "off": no per-frame stream
        # Kept across a restart.
        assert daemon.stop(timeout=15) == 0
        mark = len(sub.on(state_topic))
        daemon.proc = None
        daemon.start()
        sub.wait_for(daemon.topics.stats, timeout=30)
        states = [m.payload for m in sub.on(state_topic)[mark:]]
        assert states and set(states) == {b"OFF"}, states
        news = len([e for e in sub.on(topics.events) if e.json()["type"] == "new"])
        operator.publish(f"{topics.base}/cmd/cam0/detect/set", b"on")
        sub.wait_for(state_topic, lambda m: m.payload == b"ON", timeout=10)
        sub.wait_for(
            topics.events,
            lambda m: (
                len([e for e in sub.on(topics.events) if e.json()["type"] == "new"]) >= news + 3
            ),
            timeout=20,
        )
    finally:
        operator.close()
    assert daemon.stop(timeout=15) == 0


def test_snapshot_shows_the_object_at_its_best_box(mqtt_broker, mqtt_subscriber, edge_daemon):
    import cv2
    import numpy as np

    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        events={"labels": ["red"], "snapshot_width": 320, "snapshot_keep_on_disk": True},
    )
    sub, topics = mqtt_subscriber, daemon.topics
    snap_topic = f"{topics.base}/cam0/red/snapshot"
    msg = sub.wait_for(snap_topic, timeout=30)
    image = cv2.imdecode(np.frombuffer(msg.payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the snapshot is not a JPEG"
    assert image.shape[1] == 320 and image.shape[0] == 240  # 640x480 shrunk to 320 wide
    assert len(msg.payload) < 100_000
    new = next(e for e in (m.json() for m in sub.on(topics.events)) if e["label"] == "red")
    assert new["has_snapshot"] is True
    # The red square is where the event's best box says (scaled by 320/640).
    x0, y0, x1, y1 = (v / 2 for v in new["top_box"])
    patch = image[int(y0) + 8 : int(y1) - 8, int(x0) + 8 : int(x1) - 8].reshape(-1, 3)
    blue, green, red = patch.mean(axis=0)
    assert red > 150 and red > 2 * green and red > 2 * blue, (blue, green, red)
    assert daemon.stop(timeout=15) == 0
    # Retained: a subscriber arriving later gets the latest snapshot at once.
    retained = daemon_retained(mqtt_broker, snap_topic)
    assert len(retained) > 1000
    # Kept on disk too: one file per red event, named by its id, the last one published.
    kept = sorted((daemon.dir / "state" / "snapshots" / "cam0").glob("*-red.jpg"))
    red_ids = {e["id"] for e in (m.json() for m in sub.on(topics.events)) if e["label"] == "red"}
    assert {p.name[: -len("-red.jpg")] for p in kept} <= red_ids and new["id"] in {
        p.name[: -len("-red.jpg")] for p in kept
    }
    assert retained in {p.read_bytes() for p in kept}
    on_disk = cv2.imdecode(np.frombuffer(kept[0].read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert on_disk is not None and on_disk.shape == (240, 320, 3)


def test_a_renamed_camera_leaves_no_retained_snapshot(mqtt_broker, mqtt_subscriber, edge_daemon):
    """The camera "cam0" renamed "porch" and the daemon restarted: cam0's retained
    snapshot and detection switch state are cleared (a consumer subscribing later gets
    none), as its Home Assistant entities go; they used to stay on the broker for good."""
    from tests.support.broker import MqttSubscriber, wait_until

    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        mqtt={"publish_results": "off"},
    )
    sub, topics = mqtt_subscriber, daemon.topics
    old = f"{topics.base}/cam0/green/snapshot"
    sub.wait_for(old, timeout=30)
    assert daemon.stop(timeout=15) == 0
    assert len(daemon_retained(mqtt_broker, old)) > 1000
    daemon.proc = None
    daemon.write_config(camera={"name": "porch"})
    daemon.start()
    sub.wait_for(f"{topics.base}/porch/green/snapshot", timeout=30)
    switch = f"{topics.base}/cam0/detect/state"
    for topic in (old, switch):
        wait_until(lambda t=topic: [m.payload for m in sub.on(t)][-1:] == [b""], 10, topic)
    # A late subscriber: the broker sends what it retains in subscription order, so once
    # "available" (retained) came, a snapshot still retained on cam0 would have too.
    late = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [old, switch, topics.available])
    late.start()
    try:
        late.wait_for(topics.available, timeout=5)
        assert late.on(old) == [] and late.on(switch) == [], "cam0's topics still retained"
    finally:
        late.stop()
    assert daemon.stop(timeout=15) == 0
