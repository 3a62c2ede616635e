"""Chaos: a network camera that drops every connection right after its first frame.

A camera that keeps failing as soon as it is reopened (an ESP32-CAM that browns out on
each stream, an IP camera at its client limit that sends one frame and hangs up, a
snapshot URL configured as a stream) must be retried with backoff: the reopen delay
doubles from ``reopen_initial`` to ``reopen_max`` and is reset only by a session that lasted
as long as the delay before it, not by the one frame each session gives.
"""

from __future__ import annotations

import threading
import time

import pytest

from edge_agent.capture.camera import Camera
from edge_agent.capture.health import CameraState, CameraStats
from tests.support.chaos import DEMO, jpeg_frames
from tests.support.mjpeg import MjpegHandler, serving

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

REOPEN_INITIAL, REOPEN_MAX = 0.2, 1.6


class _FramesThenHangUp(MjpegHandler):
    """Answers each stream request with ``server.frames`` multipart frames at 20 fps, then
    closes the connection."""

    def do_GET(self) -> None:  # noqa: N802
        self.start_stream()
        try:
            for n in range(self.server.frames):
                if n:
                    time.sleep(0.05)
                self.send_part(self.server.jpg)
        except OSError:
            pass  # the camera hung up first


@pytest.fixture
def dropping_camera():
    """An MJPEG server that hangs up after ``server.frames`` frames (set it first)."""
    jpg = jpeg_frames(DEMO / "clip.avi", limit=1)[0]
    with serving(_FramesThenHangUp, jpg=jpg, frames=1) as server:
        yield server


def reopen_delays(url: str, count: int) -> tuple[list[float], CameraStats]:
    """The camera's reopen delay at each of its first ``count`` reconnects, and its stats."""
    delays: list[float] = []
    enough = threading.Event()

    def on_state(name: str, state: str, detail: str) -> None:
        if state == CameraState.RECONNECTING:  # called once the delay is set, before it
            delays.append(camera.stats().backoff)
            if len(delays) >= count:
                enough.set()

    camera = Camera(
        "cam",
        url,
        stale_after=5.0,
        reopen_initial=REOPEN_INITIAL,
        reopen_max=REOPEN_MAX,
        on_state=on_state,
    )
    camera.start()
    try:
        assert enough.wait(30), (delays, camera.stats())
        stats = camera.stats()
    finally:
        assert camera.stop(5.0)
    return delays, stats


def test_a_camera_that_drops_after_each_first_frame_backs_off(dropping_camera):
    delays, stats = reopen_delays(dropping_camera.url, 6)
    assert stats.frames >= 5, stats  # each session gave its frame: it did stream
    # Each session streamed for an instant: one outage, its delay doubling to the cap.
    assert delays[:6] == [0.2, 0.4, 0.8, 1.6, 1.6, 1.6], delays


def test_a_stream_that_drops_every_second_is_still_reopened_at_once(dropping_camera):
    dropping_camera.frames = 20  # 1 s of frames a connection: up longer than it waits
    delays, stats = reopen_delays(dropping_camera.url, 4)
    assert stats.frames >= 60, stats
    assert delays[:4] == [REOPEN_INITIAL] * 4, delays
