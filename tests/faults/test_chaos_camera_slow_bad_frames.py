"""Chaos: a network camera decoded by libjpeg (``decode_scale`` > 1, or ``motion_gate``)
whose stream turns to undecodable parts arriving slowly, each within ``stale_after``.

Every read has a deadline: undecodable frames are skipped while they come quickly (as
for an ungated camera, capture/corrupt_frames.py), but a read that has waited out that
budget fails, so the camera says ``reconnecting`` about ``stale_after`` after its last
frame and a stop is not held for eight slow bad frames.
"""

from __future__ import annotations

import functools
import threading
import time
from types import SimpleNamespace

import pytest

from edge_agent.capture.camera import Camera
from edge_agent.capture.health import CameraState
from edge_agent.capture.mjpeg import open_reduced
from tests.support.chaos import DEMO, jpeg_frames
from tests.support.mjpeg import MjpegHandler, serving

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

STALE_AFTER_S = 1.0
BAD_EVERY_S = 0.8  # within stale_after: no read of the capture itself times out
NOT_JPEG = b"hello world " * 100
GATE = SimpleNamespace(enabled=True, pixel_delta=25, threshold=0.002)


class _GoodThenSlowGarbage(MjpegHandler):
    """Three good frames, then a part that is no JPEG every BAD_EVERY_S, until stopped."""

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        self.start_stream()
        try:
            for jpg in srv.good:
                self.send_part(jpg)
            while not srv.stopping.wait(BAD_EVERY_S):
                self.send_part(NOT_JPEG)
        except OSError:
            pass  # the camera hung up


@pytest.fixture
def garbage_url():
    with serving(_GoodThenSlowGarbage, good=jpeg_frames(DEMO / "clip.avi", limit=3)) as server:
        yield server.url


@pytest.mark.parametrize(
    "scale, motion", [(2, None), (1, GATE)], ids=["decode_scale-2", "motion_gate"]
)
def test_slow_undecodable_frames_fail_the_read_within_its_deadline(garbage_url, scale, motion):
    reconnecting = threading.Event()

    def on_state(name: str, state: str, detail: str) -> None:
        if state == CameraState.RECONNECTING:
            reconnecting.set()

    camera = Camera(
        "cam",
        garbage_url,
        stale_after=STALE_AFTER_S,
        reopen_initial=5.0,  # one session is watched: no reopen within the test
        reopen_max=5.0,
        on_state=on_state,
        opener=functools.partial(open_reduced, scale=scale, motion=motion),
    )
    camera.start()
    try:
        frames = 0
        while frames < 3:
            assert camera.get(10.0) is not None, camera.stats()
            frames += 1
        last_frame = time.monotonic()
        # Before: eight bad parts were waited for in one read (6.4 s), the camera
        # "streaming" all along without a frame.
        assert reconnecting.wait(STALE_AFTER_S * 3), camera.stats()
        noticed = time.monotonic() - last_frame
    finally:
        stopping = time.monotonic()
        stopped = camera.stop(STALE_AFTER_S * 2)
        stop_s = time.monotonic() - stopping
    assert noticed <= STALE_AFTER_S * 3
    assert stopped, f"the capture thread outlived its stop by {stop_s:.1f}s"
