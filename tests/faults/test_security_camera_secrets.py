"""Security: a camera URL's password never shows in the camera's status or its logs, even
one with a space in it, which FFmpeg sends as it is written (no percent-encoding needed)."""

from __future__ import annotations

import base64
import time

import pytest

from edge_agent.capture.camera import Camera
from edge_agent.capture.health import CameraState
from edge_agent.redaction import mask_credentials
from tests.support.chaos import DEMO, jpeg_frames
from tests.support.mjpeg import MjpegHandler, serving

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

USER, PASSWORD = "admin", "open sesame"


class _BasicAuthStream(MjpegHandler):
    """An MJPEG camera behind Basic authentication (401 without the right credentials)."""

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="cam"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        srv.authorized += 1
        self.start_stream()
        try:
            while not srv.stopping.wait(1 / 30):
                self.send_part(srv.jpg)
        except OSError:
            pass  # the camera hung up


@pytest.fixture
def camera_server():
    jpg = jpeg_frames(DEMO / "clip.avi", limit=1)[0]
    with serving(_BasicAuthStream, jpg=jpg, authorized=0) as server:
        yield server


def _camera(url: str, states: list[tuple[str, str]]) -> Camera:
    """A camera on ``url`` that reopens quickly and records its state changes."""
    return Camera(
        "door",
        url,
        stale_after=2.0,
        reopen_initial=0.1,
        reopen_max=0.2,
        on_state=lambda name, state, detail: states.append((state, detail)),
    )


def test_a_password_with_a_space_is_used_and_never_shown(camera_server, caplog):
    port = camera_server.server_address[1]
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/stream.mjpg"
    states: list[tuple[str, str]] = []
    camera = _camera(url, states)
    with caplog.at_level("DEBUG", logger="edge_agent"):
        camera.start()
        try:
            assert camera.get(15.0) is not None, camera.stats()  # FFmpeg sent it as written
            camera_server.stopping.set()  # the stream ends: the camera reports and retries
            deadline = time.monotonic() + 15
            while camera.state != CameraState.RECONNECTING:
                assert time.monotonic() < deadline, camera.stats()
                time.sleep(0.02)
            stats = camera.stats()
        finally:
            camera.stop(5.0)
    assert camera_server.authorized >= 1
    shown = [stats.source, str(stats.last_error), *(d for _, d in states), caplog.text]
    assert not [text for text in shown if "sesame" in text], shown
    assert stats.source == f"http://{USER}:***@127.0.0.1:{port}/stream.mjpg"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("rtsp://admin:open sesame@cam/live", "rtsp://admin:***@cam/live"),
        ("camera rtsp://a:b c@h/1 failed", "camera rtsp://a:***@h/1 failed"),
        ("rtsp://host:554/live failed for user@example.com", None),  # no userinfo: as is
    ],
)
def test_mask_credentials_takes_spaces_in_a_password(text, masked):
    assert mask_credentials(text) == (masked or text)


@pytest.mark.parametrize("password", ["se#same!", "se/same!", "se?same!"])
def test_a_password_with_an_unencoded_delimiter_fails_without_being_shown(
    camera_server, caplog, password
):
    # No client can parse such a URL (the authority ends at the delimiter); the errors
    # that say so quote it, and the status is retained on the broker for every subscriber.
    port = camera_server.server_address[1]
    url = f"http://{USER}:{password}@127.0.0.1:{port}/stream.mjpg"
    states: list[tuple[str, str]] = []
    camera = _camera(url, states)
    with caplog.at_level("DEBUG", logger="edge_agent"):
        camera.start()
        try:
            deadline = time.monotonic() + 15
            while camera.stats().last_error is None:
                assert time.monotonic() < deadline, camera.stats()
                time.sleep(0.02)
            stats = camera.stats()
        finally:
            camera.stop(5.0)
    assert camera_server.authorized == 0
    shown = [stats.source, str(stats.last_error), *(d for _, d in states), caplog.text]
    assert not [text for text in shown if "same!" in text], shown
    assert stats.source == f"http://{USER}:***@127.0.0.1:{port}/stream.mjpg"
