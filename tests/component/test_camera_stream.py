"""A camera against a real MJPEG-over-HTTP stream whose resolution changes mid-stream.

OpenCV's FFmpeg backend keeps the size the stream was opened at: after the change every
read returns the last image converted at the old size again, as a success. The camera
must notice the frozen stream and reopen it at its new size.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from edge_agent.capture import camera as camera_module
from edge_agent.capture.camera import Camera

pytestmark = pytest.mark.timeout(60)

BOUNDARY = b"frame"


def jpeg(width: int, height: int, n: int) -> bytes:
    """A JPEG of that size whose pixels differ from frame to frame, like a live camera's."""
    image = np.random.default_rng(n).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        self.end_headers()
        n = 0
        try:
            while not srv.stopping.wait(1 / 30):
                data = jpeg(*srv.size, n)
                head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                self.wfile.write(head % (BOUNDARY, len(data)) + data + b"\r\n")
                n += 1
        except OSError:
            pass  # the camera hung up


@pytest.fixture
def stream():
    """An endless MJPEG stream at ``server.size`` (change it to change the resolution)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.size, server.stopping = (160, 120), threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()


def frame_of_size(camera: Camera, shape: tuple[int, int], timeout: float) -> bool:
    """True once the camera delivers a frame of (height, width) = shape within timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = camera.get(0.5)
        if frame is not None and frame.image.shape[:2] == shape:
            return True
    return False


def test_a_stream_that_changes_resolution_is_reopened_at_its_new_size(stream, monkeypatch):
    monkeypatch.setattr(camera_module, "FREEZE_AFTER", 1.0)  # 30 s in the daemon
    url = f"http://127.0.0.1:{stream.server_address[1]}/live.mjpg"
    camera = Camera("cam", url, stale_after=1.0, reopen_initial=0.05, reopen_max=0.2)
    camera.start()
    try:
        assert frame_of_size(camera, (120, 160), timeout=15), camera.stats()
        stream.size = (320, 240)
        # Before: frames kept coming at 160x120, all one image, the camera "streaming".
        assert frame_of_size(camera, (240, 320), timeout=15), camera.stats()
        stats = camera.stats()
        assert "the stream froze" in (stats.last_error or "")
        assert stats.reconnects >= 1
    finally:
        assert camera.stop(5)
