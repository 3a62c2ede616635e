"""Tier 3: a camera source that disappears and comes back, with the daemon staying up.

A 1 s looping clip is renamed away: at its next end the camera finds the file gone,
the retained status shows it ``reconnecting`` and results stop. Renamed back, the camera
reopens it (backoff 0.2..0.5 s): ``streaming`` again and results resume.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.support.broker import wait_until
from tests.support.clips import write_clip
from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

DEMO = REPO / "models" / "demo"


def camera_state(sub, topics) -> str | None:
    """cam0's state in the latest status message."""
    msgs = sub.on(topics.status)
    return msgs[-1].json()["cameras"]["cam0"]["state"] if msgs else None


def test_camera_file_vanishes_and_returns(tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon):
    clip = write_clip(tmp_path / "short.avi", 15, fps=15.0)  # 1 s, looped
    away = tmp_path / "elsewhere.avi"
    daemon = edge_daemon(
        mqtt_broker.port,
        clip,
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        mqtt={"publish_every_frame": True},  # the pattern has no blobs: publish anyway
    )
    sub, topics = mqtt_subscriber, daemon.topics
    sub.wait_count(topics.results, 20, timeout=20)  # past one loop of the file
    wait_until(lambda: camera_state(sub, topics) == "streaming", 10, "status streaming")

    os.rename(clip, away)
    wait_until(lambda: camera_state(sub, topics) == "reconnecting", 5, "status reconnecting")
    gone = time.monotonic()
    reconnecting = edge_daemon.retained(mqtt_broker, topics.status).json()["cameras"]["cam0"]
    assert reconnecting["state"] == "reconnecting"
    assert "disappeared" in reconnecting["last_error"], reconnecting
    time.sleep(0.5)  # frames already in flight finish
    stalled = len(sub.on(topics.results))
    time.sleep(1.5)
    assert len(sub.on(topics.results)) == stalled, "results kept coming without a source"
    assert daemon.alive()

    os.rename(away, clip)
    back = time.monotonic()
    wait_until(lambda: camera_state(sub, topics) == "streaming", 5, "status streaming again")
    sub.wait_count(topics.results, stalled + 15, timeout=10)
    resumed = time.monotonic() - back
    status = sub.on(topics.status)[-1].json()
    assert status["state"] == "running"
    assert status["cameras"]["cam0"]["reconnects"] >= 1
    assert status["cameras"]["cam0"]["frame_size"] == [320, 240]  # the clip's, as read
    assert daemon.alive()
    ids = [m.json()["frame_id"] for m in sub.on(topics.results)]
    assert ids == sorted(set(ids)), "frame ids must keep increasing across the reopen"
    assert daemon.stop(timeout=10) == 0
    print(
        f"camera: results stopped {stalled} in, source missing for {back - gone:.1f}s, "
        f"15 more results {resumed:.2f}s after the file came back"
    )
