"""Tier 3: objects in a real scene. A clip made from the shared photos runs through the real
yolov8n in the daemon: a person walks in (Grace Hopper, panning in from the right edge),
then leaves (the pets photo: two dogs, no person).

One ``person`` event starts, is updated as she comes into full view, and ends once after
she left; the retained count goes 1 then 0; the retained snapshot is a JPEG of her.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.support.broker import MqttSubscriber
from tests.support.paths import shared_file

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

W, H = 640, 480
IN_FRAMES, OUT_FRAMES = 30, 45


def person_clip(path) -> tuple[int, int]:
    """Write the clip; returns (frames with the person, frames without)."""
    hopper = cv2.imread(str(shared_file("images/grace_hopper.bmp")))
    pets = cv2.resize(cv2.imread(str(shared_file("images/pets.jpg"))), (W, H))
    scale = H / hopper.shape[0]
    person = cv2.resize(hopper, (round(hopper.shape[1] * scale), H), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (W, H))
    assert writer.isOpened()
    pw = person.shape[1]
    for i in range(IN_FRAMES):
        # From a third of her in view at the right edge to fully in view, centred.
        x = round(W - pw / 3 - (W - pw / 3 - (W - pw) / 2) * min(1.0, i / (IN_FRAMES * 0.6)))
        frame = np.full((H, W, 3), 96, np.uint8)
        visible = min(pw, W - x)
        frame[:, x : x + visible] = person[:, :visible]
        writer.write(frame)
    for _ in range(OUT_FRAMES):
        writer.write(pets)
    writer.release()
    return IN_FRAMES, OUT_FRAMES


def test_a_person_event_starts_once_updates_and_ends_once_with_one_snapshot(
    mqtt_broker, edge_daemon, tmp_path
):
    model = shared_file("models/yolov8n_full_integer_quant.tflite")
    labels = shared_file("models/yolov8n_labels.txt")
    clip = tmp_path / "scene.avi"
    person_clip(clip)
    daemon = edge_daemon(
        mqtt_broker.port,
        clip,
        model,
        labels,
        # Every frame once, as fast as the model goes (no drops: the outcome is the clip's).
        camera={"loop": False, "realtime": False},
        mqtt={"publish_results": "off"},
        events={"update_interval": 0.2, "max_age": 0.5, "labels": ["person"]},
    )
    topics = daemon.topics
    count_topic = topics.count("cam0", "person")
    snap_topic = f"{topics.base}/cam0/person/snapshot"
    sub = MqttSubscriber(
        mqtt_broker.host, mqtt_broker.port, [topics.events, count_topic, snap_topic]
    ).start()

    def person_events():
        return [e for e in (m.json() for m in sub.on(topics.events)) if e["label"] == "person"]

    try:
        sub.wait_for(topics.events, lambda m: any(e["type"] == "end" for e in person_events()), 90)
        assert daemon.stop(timeout=15) == 0
    finally:
        sub.stop()
    events = person_events()
    kinds = [e["type"] for e in events]
    assert kinds.count("new") == 1 and kinds.count("end") == 1, events
    assert kinds[0] == "new" and kinds[-1] == "end" and "update" in kinds, kinds
    assert len({e["id"] for e in events}) == 1  # one object, one event
    end = events[-1]
    assert end["end_time"] > end["start_time"] and end["top_score"] >= 0.5
    assert end["has_snapshot"] is True
    # The box of her best frame is a person-sized one: most of the frame's height.
    x0, y0, x1, y1 = end["top_box"]
    assert y1 - y0 > 0.6 * H and 0 <= x0 < x1 <= W
    # Retained count, on change only: 0 (a configured label starts at 0), 1 while she is
    # there, 0 after; never a flicker.
    counts = [m.payload.decode() for m in sub.on(count_topic)]
    assert counts == ["0", "1", "0"], counts
    # One snapshot topic, retained; its JPEG decodes, is bounded, and shows her.
    snaps = sub.on(snap_topic)
    assert snaps, "no snapshot published"
    image = cv2.imdecode(np.frombuffer(snaps[-1].payload, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] <= 640 and len(snaps[-1].payload) < 200_000
    late = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [snap_topic]).start()
    try:
        retained = late.wait_for(snap_topic, timeout=5)
    finally:
        late.stop()
    assert retained.retain and retained.payload == snaps[-1].payload
