"""Cameras stopped together (the daemon's shutdown) wait for the slowest one's backend,
not for the sum of them: each is told to stop before any is joined."""

from __future__ import annotations

import threading
import time

import pytest

from edge_agent.capture.camera import Camera
from edge_agent.capture.synthetic import SyntheticCapture

pytestmark = pytest.mark.timeout(60)

BLOCK_S = 0.5  # each read, like a backend that ignores the stop until its own timeout
CAMERAS = 6  # stopped one after the other they would need 3 s
BUDGET_S = 2.0


class _Slow:
    """A capture whose every read blocks ``block`` s (after the first), then gives a frame."""

    def __init__(self, started: threading.Event, block: float = BLOCK_S):
        self.inner, self.started, self.reads = SyntheticCapture(64, 48), started, 0
        self.block = block

    def read(self, image=None):
        self.reads += 1
        if self.reads > 1:
            self.started.set()
            threading.Event().wait(self.block)  # a blocking call that no stop interrupts
        return self.inner.read(image)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def told_to_stop(name: str, count: int, block: float = BLOCK_S) -> list[Camera]:
    """``count`` started cameras, each blocked in its backend's read, all told to stop."""
    blocked = [threading.Event() for _ in range(count)]
    cameras = [
        Camera(f"{name}{i}", "rtsp://cam/x", opener=lambda spec, ev=ev, **kw: _Slow(ev, block))
        for i, ev in enumerate(blocked)
    ]
    for camera in cameras:
        camera.start()
    for event in blocked:
        assert event.wait(10), "a camera never reached its blocking read"
    for camera in cameras:
        camera.stop_soon()
    return cameras


def test_cameras_told_to_stop_together_all_stop_within_one_budget():
    cameras = told_to_stop("cam", CAMERAS)
    end = time.monotonic() + BUDGET_S  # the daemon's shutdown: one budget for all the joins
    stopped = [camera.stop(max(0.0, end - time.monotonic())) for camera in cameras]
    assert all(stopped), stopped
    assert all(not camera.is_alive() for camera in cameras)
    assert [camera.state for camera in cameras] == ["stopped"] * CAMERAS


def test_a_camera_joined_late_in_the_budget_says_how_long_its_stop_has_waited(caplog):
    # The daemon joins the cameras one after the other within one budget, so a later one
    # gets what is left (here nothing): its warning counts from the stop, not its join.
    cameras = told_to_stop("late", 2, block=3.0)
    with caplog.at_level("WARNING", logger="edge_agent.capture.camera"):
        assert not cameras[0].stop(0.2)  # the budget spent on the first
        assert not cameras[1].stop(0.0)
    late = [r.getMessage() for r in caplog.records if "late1" in r.getMessage()]
    assert len(late) == 1, late
    waited = float(late[0].split("backend ")[1].split("s after")[0])
    assert waited >= 0.2, late[0]
    for camera in cameras:
        assert camera.stop(5)
