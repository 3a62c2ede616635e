"""Tier 3: ``edge-agent run`` on a recording with ``realtime = false``: every frame of the
file yields one result, with consecutive frame ids, and the camera drops none, although the
file says 1000 fps, a rate no pipeline here keeps up with (paced, it would drop)."""

from __future__ import annotations

import cv2
import pytest

from tests.support.broker import MqttSubscriber
from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DEMO = REPO / "models" / "demo"


def relabel(src, dst, fps: float) -> int:
    """Copy the clip's frames into ``dst`` labelled ``fps``; returns the frame count."""
    cap = cv2.VideoCapture(str(src))
    writer, n = None, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if writer is None:
            size = (frame.shape[1], frame.shape[0])
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
        writer.write(frame)
        n += 1
    cap.release()
    writer.release()
    assert cv2.VideoCapture(str(dst)).get(cv2.CAP_PROP_FPS) == pytest.approx(fps)
    return n


@pytest.mark.parametrize("realtime", [False, True])
def test_a_recording_read_losslessly_gives_one_result_per_frame(
    realtime, mqtt_broker, edge_daemon, tmp_path
):
    clip = tmp_path / "fast.avi"
    frames = relabel(DEMO / "clip.avi", clip, 1000.0)
    daemon = edge_daemon(
        mqtt_broker.port,
        clip,
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        camera={"loop": False, "realtime": realtime},
        mqtt={"publish_every_frame": True},
    )
    topics = daemon.topics
    sub = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [topics.results, topics.status])
    sub.start()
    try:
        sub.wait_for(
            topics.status, lambda m: m.json()["cameras"]["cam0"]["state"] == "ended", timeout=60
        )
        if not realtime:
            sub.wait_count(topics.results, frames, timeout=30)
        assert daemon.stop(timeout=10) == 0
        last = sub.wait_for(topics.status, lambda m: m.json()["state"] == "stopped", timeout=10)
    finally:
        sub.stop()
    ids = sorted({m.json()["frame_id"] for m in sub.on(topics.results)})
    dropped = last.json()["cameras"]["cam0"]["dropped"]
    if realtime:  # the control: paced at 1000 fps, the camera drops what it cannot hand on
        assert dropped > 0 and len(ids) < frames
        return
    assert len(ids) == frames, f"{len(ids)} results for {frames} frames"
    assert ids == list(range(ids[0], ids[0] + frames)), "frame ids have a gap"
    assert dropped == 0
