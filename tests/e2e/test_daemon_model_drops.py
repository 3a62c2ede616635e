"""Tier 3: frames the model drops are counted in the daemon's published stats.

``fails_on_input.tflite`` (tests/fixtures/README.md) runs on an image with a black
pixel and fails at invoke on any other. The clip alternates the two, so half its
frames are dropped with the CPU the last backend: no result is published for them,
and the stats' ``counters.errors`` is where a subscriber learns of the holes.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support.paths import fixture_model

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def write_half_dark_clip(path: Path, frames: int = 30) -> Path:
    """A 320x240 MJPG clip: even frames grey (no black pixel), odd ones with a black square."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (320, 240))
    assert writer.isOpened(), f"cannot write {path}"
    try:
        for i in range(frames):
            frame = np.full((240, 320, 3), 150, np.uint8)
            if i % 2:
                frame[:64, :64] = 0
            writer.write(frame)
    finally:
        writer.release()
    return path


def test_frames_the_model_fails_on_are_counted_as_errors_in_stats(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    daemon = edge_daemon(
        mqtt_broker.port,
        write_half_dark_clip(tmp_path / "half_dark.avi"),
        fixture_model("fails_on_input.tflite"),
        fixture_model("color_labels.txt"),
        model={"device": "cpu"},
        camera={"realtime": False, "loop": False},
        mqtt={"publish_results": "all"},
    )
    sub, topics = mqtt_subscriber, daemon.topics
    sub.wait_count(topics.results, 15, timeout=30)
    stats = sub.wait_for(
        topics.stats, lambda m: m.json()["counters"]["frames"] == 15, timeout=15
    ).json()
    published = sorted(m.json()["frame_id"] for m in sub.on(topics.results))
    assert published == list(range(1, 30, 2))  # the grey frames left holes
    assert stats["counters"]["errors"] == 15, stats["counters"]  # and each is counted
    assert daemon.alive()


def test_the_status_names_the_latest_failure_not_an_earlier_worker_death(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    # The worker is killed once (an OOM kill), then the model fails on frames: the
    # retained status must say what goes wrong now, not the death it recovered from.
    daemon = edge_daemon(
        mqtt_broker.port,
        write_half_dark_clip(tmp_path / "half_dark.avi", frames=60),
        fixture_model("fails_on_input.tflite"),
        fixture_model("color_labels.txt"),
        model={"device": "cpu"},
        camera={"realtime": False},
    )
    sub, topics = mqtt_subscriber, daemon.topics
    sub.wait_count(topics.results, 2, timeout=30)
    (worker,) = daemon.worker_pids()
    os.kill(worker, signal.SIGKILL)
    restarted = sub.wait_for(topics.stats, lambda m: m.json()["worker_restarts"] >= 1, 15)

    def later_invoke_failure(m) -> bool:
        after = sub.messages.index(m) > sub.messages.index(restarted)
        return after and "invoke failed" in m.json()["last_error"]

    status = sub.wait_for(topics.status, later_invoke_failure, timeout=15).json()
    assert status["backend"] == "cpu" and daemon.alive()
