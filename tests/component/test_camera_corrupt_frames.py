"""A live MJPEG stream with an undecodable frame: the camera skips it and keeps streaming
on the same connection (OpenCV's read fails on that frame only), where it used to take
the failed read for a lost stream and reopen it. A stream that is really gone, or
silent, is still reopened."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_agent.capture.camera import Camera
from edge_agent.capture.corrupt_frames import SkipCorruptFrames
from edge_agent.capture.health import CameraState
from tests.support.chaos import DEMO, MjpegServer, jpeg_frames
from tests.support.clock import FakeClock

pytestmark = pytest.mark.timeout(60)

GARBLED = b"\xff\xd8" + np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes()
NOT_JPEG = b"hello world " * 100


def distinct_frames(camera: Camera, count: int, timeout: float) -> int:
    """Frames (distinct ids) the camera delivers, until ``count`` or ``timeout``."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        frame = camera.get(0.5)
        if frame is not None:
            seen.add(frame.frame_id)
    return len(seen)


@pytest.mark.parametrize("bad", [GARBLED, NOT_JPEG], ids=["garbled", "not-jpeg"])
def test_a_bad_frame_is_skipped_on_the_same_connection(bad):
    frames = jpeg_frames(DEMO / "clip.avi", limit=20)
    frames[5] = frames[12] = bad  # served in a loop: two bad frames every 20
    server = MjpegServer(frames, fps=60)
    server.start()
    camera = Camera("cam", server.url, stale_after=5.0, reopen_initial=0.05, reopen_max=0.2)
    camera.start()
    try:
        assert distinct_frames(camera, 60, timeout=30) >= 60  # 3 loops: 6 bad frames
        stats = camera.stats()
    finally:
        camera.stop(5.0)
        server.stop()
    assert stats.reconnects == 0, stats
    assert server.connections == 1


def test_a_stream_that_goes_away_is_still_reopened():
    server = MjpegServer(jpeg_frames(DEMO / "clip.avi", limit=10), fps=60)
    server.start()
    camera = Camera("cam", server.url, stale_after=5.0, reopen_initial=0.05, reopen_max=0.2)
    camera.start()
    try:
        assert distinct_frames(camera, 5, timeout=20) == 5
        server.stop()
        deadline = time.monotonic() + 20
        while camera.stats().state != CameraState.RECONNECTING:
            assert time.monotonic() < deadline, "the lost stream was never noticed"
            time.sleep(0.02)
        server.start()
        assert distinct_frames(camera, 5, timeout=20) == 5
    finally:
        camera.stop(5.0)
        server.stop()
    assert server.connections >= 2


class ScriptedCapture:
    """Reads from a script: True (a frame), False (a quick failure) or a float (a failure
    after that many seconds of a fake clock)."""

    def __init__(self, script, clock):
        self.script, self.clock, self.reads = list(script), clock, 0

    def read(self, image=None):
        self.reads += 1
        step = self.script.pop(0)
        if isinstance(step, float):
            self.clock.now += step
            return False, None
        return (True, np.zeros((2, 2, 3), np.uint8)) if step else (False, None)


@pytest.fixture
def clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("edge_agent.capture.corrupt_frames.time.monotonic", clock)
    return clock


def test_quick_failures_are_skipped_up_to_the_limit(clock):
    cap = ScriptedCapture([False] * 7 + [True] + [False] * 8, clock)
    skipping = SkipCorruptFrames(cap, "cam", read_timeout=10.0)
    ok, frame = skipping.read()
    assert ok and frame is not None and skipping.bad_frames == 7
    ok, frame = skipping.read()  # eight in a row: the read fails, as the capture's did
    assert not ok and frame is None and cap.reads == 16


def test_a_read_that_timed_out_is_not_tried_again(clock):
    cap = ScriptedCapture([0.6, True], clock)
    ok, _ = SkipCorruptFrames(cap, "cam", read_timeout=1.0).read()  # 0.6 s >= half of 1 s
    assert not ok and cap.reads == 1


def test_quick_failures_that_add_up_to_the_budget_stop_being_retried(clock):
    """Each failure alone is quick, but a stop (or a lost stream) must not wait for 8."""
    cap = ScriptedCapture([0.3, 0.3, True], clock)
    ok, _ = SkipCorruptFrames(cap, "cam", read_timeout=1.0).read()  # 0.6 s >= 0.5 s
    assert not ok and cap.reads == 2
