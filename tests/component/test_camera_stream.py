"""A camera against a real MJPEG-over-HTTP stream whose resolution changes mid-stream.

OpenCV's FFmpeg backend keeps the size the stream was opened at: after the change every
read returns the last image converted at the old size again, as a success. The camera
must notice the frozen stream and reopen it at its new size.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from edge_agent.capture import camera as camera_module
from edge_agent.capture.camera import Camera
from tests.support.mjpeg import MjpegHandler, serving

pytestmark = pytest.mark.timeout(60)


def jpeg(width: int, height: int, n: int) -> bytes:
    """A JPEG of that size whose pixels differ from frame to frame, like a live camera's."""
    image = np.random.default_rng(n).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


class _Handler(MjpegHandler):
    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        self.start_stream()
        n = 0
        try:
            while not srv.stopping.wait(1 / 30):
                self.send_part(jpeg(*srv.size, n))
                n += 1
        except OSError:
            pass  # the camera hung up


@pytest.fixture
def stream():
    """An endless MJPEG stream at ``server.size`` (change it to change the resolution)."""
    with serving(_Handler, size=(160, 120)) as server:
        yield server


def frame_of_size(camera: Camera, shape: tuple[int, int], timeout: float) -> bool:
    """True once the camera delivers a frame of (height, width) = shape within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = camera.get(0.5)
        if frame is not None and frame.image.shape[:2] == shape:
            return True
    return False


def longest_freeze(camera: Camera, new_shape: tuple[int, int], span: float) -> tuple[float, bool]:
    """Read frames for ``span`` s of capture time, or until one of ``new_shape``: the
    longest run of one image repeated (seconds between its first and last capture), and
    whether a frame of the new shape came."""
    start = time.monotonic()
    longest, first, last = 0.0, None, None
    while time.monotonic() - start < span + 10:  # the bound if no frame comes at all
        frame = camera.get(0.5)
        if frame is None:
            continue
        if frame.image.shape[:2] == new_shape:
            return longest, True
        if last is not None and np.array_equal(last, frame.image):
            longest = max(longest, frame.monotonic - first)
        else:
            first = frame.monotonic
        last = frame.image.copy()
        if frame.monotonic - start >= span:
            return longest, False
    return longest, False


def test_a_stream_that_changes_resolution_is_never_served_frozen(stream, monkeypatch):
    monkeypatch.setattr(camera_module, "FREEZE_AFTER", 1.0)  # 30 s in the daemon
    url = f"http://127.0.0.1:{stream.server_address[1]}/live.mjpg"
    camera = Camera("cam", url, stale_after=1.0, reopen_initial=0.05, reopen_max=0.2)
    camera.start()
    try:
        assert frame_of_size(camera, (120, 160), timeout=15), camera.stats()
        stream.size = (320, 240)
        # OpenCV 4's FFmpeg backend then returns the last 160x120 image again and again,
        # as a success (before the fix: forever, the camera "streaming"); OpenCV 5's
        # scales the new frames down to the size it opened with, a live picture. Either
        # way no image may stand for longer than the freeze limit.
        longest, reopened = longest_freeze(camera, (240, 320), span=4.0)
        assert longest < 2.0, (longest, camera.stats())
        if reopened:  # OpenCV 4: it froze, was failed and reopened at the new size
            stats = camera.stats()
            assert "the stream froze" in (stats.last_error or "") and stats.reconnects >= 1
    finally:
        assert camera.stop(5)
