"""Camera threads against real video files, synthetic sources and dead endpoints."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from types import SimpleNamespace

import cv2
import pytest

from edge_agent.capture.camera import Camera
from edge_agent.capture.frames import BUFFERS
from edge_agent.capture.health import CameraState
from edge_agent.capture.sources import open_capture
from edge_agent.capture.synthetic import SyntheticCapture, decode_index
from edge_agent.errors import CaptureError
from tests.support.clips import frame_count, write_clip, write_photo_clip
from tests.support.paths import shared_file

pytestmark = pytest.mark.timeout(30)

FAST = {"reopen_initial": 0.01, "reopen_max": 0.04}


class StateLog:
    """An on_state callback recording transitions, with waits on them."""

    def __init__(self):
        self._cond = threading.Condition()
        self.events: list[tuple[str, str]] = []

    def __call__(self, name, state, detail):
        with self._cond:
            self.events.append((state, detail))
            self._cond.notify_all()

    def states(self) -> list[str]:
        with self._cond:
            return [state for state, _ in self.events]

    def wait_for(self, state: str, count: int = 1, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._count(state) >= count, timeout)

    def _count(self, state):
        return sum(1 for s, _ in self.events if s == state)


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


@pytest.fixture
def camera_factory():
    cameras: list[Camera] = []

    def make(*args, **kwargs) -> Camera:
        camera = Camera(*args, **kwargs)
        cameras.append(camera)
        return camera

    yield make
    for camera in cameras:
        assert camera.stop(timeout=5), f"{camera} did not stop"


def drain(camera: Camera, limit: int, timeout: float = 5.0) -> list:
    """Take frames until `limit` or None: (frame, frame number decoded from its image)."""
    frames = []
    while len(frames) < limit:
        frame = camera.get(timeout)
        if frame is None:
            break
        frames.append((frame, decode_index(frame.image)))
    return frames


def test_file_is_read_completely_in_order_then_ends(tmp_path, camera_factory):
    clip = write_clip(tmp_path / "clip.avi", 24, width=160, height=120, fps=30)
    assert frame_count(clip) == 24
    log = StateLog()
    camera = camera_factory("door", str(clip), realtime=False, on_state=log, **FAST)
    camera.start()
    got = drain(camera, 100)
    assert [f.frame_id for f, _ in got] == list(range(24))
    assert [code for _, code in got] == list(range(24))
    first = got[0][0]
    assert first.image.shape == (120, 160, 3) and first.image.dtype == "uint8"
    assert first.camera == "door"
    assert all(a.monotonic <= b.monotonic for (a, _), (b, _) in zip(got, got[1:]))
    assert log.wait_for(CameraState.ENDED)
    assert wait_until(lambda: not camera.is_alive())
    stats = camera.stats()
    assert (stats.state, stats.frames, stats.dropped, stats.reconnects) == ("ended", 24, 0, 0)
    assert log.states() == ["streaming", "ended"]
    assert camera.get(30) is None  # ended and drained: immediate


def test_file_loops_with_continuing_ids(tmp_path, camera_factory):
    clip = write_clip(tmp_path / "loop.avi", 12, width=64, height=48)
    camera = camera_factory("loop", str(clip), loop=True, realtime=False, **FAST)
    camera.start()
    got = drain(camera, 40)
    assert [f.frame_id for f, _ in got] == list(range(40))
    assert [code for _, code in got] == [i % 12 for i in range(40)]
    stats = camera.stats()
    assert (stats.state, stats.dropped, stats.reconnects) == ("streaming", 0, 0)


def test_photo_clip_frames_reuse_the_slot_buffers(tmp_path, camera_factory):
    clip = write_photo_clip(tmp_path / "pets.avi", shared_file("images/pets.jpg"), 20)
    camera = camera_factory("pets", str(clip), realtime=False)
    camera.start()
    got = drain(camera, 20)
    assert [code for _, code in got] == list(range(20))
    addresses = {f.image.__array_interface__["data"][0] for f, _ in got}
    assert len(addresses) <= BUFFERS  # decoded in place into the ring, no per-frame allocation


def test_latest_frame_semantics_with_a_slow_consumer(camera_factory):
    camera = camera_factory("fast", "synthetic:64x48@400")
    camera.start()
    taken = []
    for _ in range(12):
        before = camera.stats().frames
        # The consumer is "busy" until the producer has made 3 more frames.
        assert wait_until(lambda b=before: camera.stats().frames >= b + 3)
        published = camera.stats().frames
        frame = camera.get(5)
        assert frame is not None
        assert frame.frame_id >= published - 1, "not the newest frame"
        taken.append(frame)
        # Still busy with it while the producer keeps going: the image must not change.
        assert wait_until(lambda p=published: camera.stats().frames >= p + 4)
        assert decode_index(frame.image) == frame.frame_id
    ids = [f.frame_id for f in taken]
    assert ids == sorted(set(ids)), "a frame was returned twice or out of order"
    assert camera.stop(5)
    stats = camera.stats()
    # Every frame read was taken, dropped, or is the one still waiting in the slot.
    assert stats.frames - len(ids) - stats.dropped in (0, 1)
    assert stats.dropped >= 12 * 2


def test_lossless_synthetic_drops_nothing(camera_factory):
    camera = camera_factory("bench", "synthetic:64x48@5", realtime=False)
    camera.start()
    got = drain(camera, 30)
    assert [f.frame_id for f, _ in got] == list(range(30))
    assert [code for _, code in got] == list(range(30))
    assert camera.stats().dropped == 0


def test_file_disappears_then_comes_back(tmp_path, camera_factory):
    clip = write_clip(tmp_path / "cam.avi", 10, width=64, height=48, fps=200)
    away = tmp_path / "cam.avi.away"
    log = StateLog()
    camera = camera_factory("yard", str(clip), loop=True, on_state=log, **FAST)
    camera.start()
    assert log.wait_for(CameraState.STREAMING)
    os.rename(clip, away)
    assert log.wait_for(CameraState.RECONNECTING)
    assert log.events[1] == ("reconnecting", f"{clip}: file disappeared")
    assert wait_until(lambda: camera.stats().reconnects >= 4)
    stats = camera.stats()
    assert stats.state == "reconnecting" and stats.backoff == 0.04  # 0.01, 0.02, 0.04 cap
    assert "no such file" in stats.last_error
    assert camera.is_alive()
    os.rename(away, clip)
    assert log.wait_for(CameraState.STREAMING, count=2)
    frame = camera.get(5)
    assert frame is not None and decode_index(frame.image) in range(10)
    assert camera.stats().backoff == 0.0
    assert log.states() == ["streaming", "reconnecting", "streaming"]


def test_missing_file_at_start_is_retried_until_it_appears(tmp_path, camera_factory):
    path = tmp_path / "later.avi"
    log = StateLog()
    camera = camera_factory("later", str(path), realtime=False, on_state=log, **FAST)
    camera.start()
    assert log.wait_for(CameraState.RECONNECTING)
    write_clip(tmp_path / "tmp.avi", 5, width=64, height=48)
    os.replace(tmp_path / "tmp.avi", path)
    assert log.wait_for(CameraState.STREAMING)
    assert [code for _, code in drain(camera, 5)] == [0, 1, 2, 3, 4]


def test_looping_file_replaced_on_disk_is_reopened(tmp_path, camera_factory):
    clip = write_clip(tmp_path / "demo.avi", 6, width=64, height=48)
    camera = camera_factory("demo", str(clip), loop=True, realtime=False, **FAST)
    camera.start()
    assert [code for _, code in drain(camera, 3)] == [0, 1, 2]
    write_clip(tmp_path / "new.avi", 6, width=64, height=48, start=1000)
    os.replace(tmp_path / "new.avi", clip)
    codes = [code for _, code in drain(camera, 20)]
    assert codes[:3] == [3, 4, 5]  # the open file plays out first
    assert codes[3:9] == list(range(1000, 1006))
    assert camera.stats().reconnects == 0


@pytest.mark.skipif(os.path.exists("/dev/video99"), reason="/dev/video99 exists here")
def test_missing_device_backs_off_capped_and_stops_promptly(camera_factory):
    log = StateLog()
    camera = camera_factory("usb", "/dev/video99", on_state=log, **FAST)
    camera.start()
    assert log.wait_for(CameraState.RECONNECTING)
    assert wait_until(lambda: camera.stats().reconnects >= 5)
    stats = camera.stats()
    assert stats.state == "reconnecting" and stats.backoff == 0.04 and stats.frames == 0
    assert "/dev/video99: no such device" in stats.last_error
    assert camera.is_alive()
    assert camera.stop(timeout=2)
    assert camera.state == "stopped" and not camera.is_alive()
    assert camera.get(0) is None
    assert log.states() == ["reconnecting", "stopped"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_closed_port_stream_reconnects_without_leaking_credentials(scheme, camera_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="edge_agent.capture")
    url = f"{scheme}://admin:s3cret@127.0.0.1:{_closed_port()}/live"
    log = StateLog()
    camera = camera_factory("gate", url, stale_after=1.0, on_state=log, **FAST)
    assert "s3cret" not in camera.source and "admin:***@" in camera.source
    camera.start()
    assert wait_until(lambda: camera.stats().reconnects >= 3)
    stats = camera.stats()
    assert stats.state == "reconnecting" and camera.is_alive()
    assert camera.stop(timeout=2)
    assert "s3cret" not in repr(stats) + repr(log.events) + caplog.text
    assert "admin:***@127.0.0.1" in caplog.text


def test_raising_on_state_callback_does_not_kill_the_thread(camera_factory, caplog):
    def explode(name, state, detail):
        raise RuntimeError(f"callback broke on {state}")

    camera = camera_factory("cb", "synthetic:64x48@200", on_state=explode)
    camera.start()
    assert len(drain(camera, 3)) == 3
    assert camera.is_alive() and camera.state == "streaming"
    assert camera.stop(2)  # the "stopped" callback raises too; stop() must not
    assert "on_state callback failed" in caplog.text


class _Flaky:
    """Wraps a capture: read() fails (returns False, or raises) after `good` frames."""

    def __init__(self, inner, good, failure):
        self.inner, self.good, self.failure = inner, good, failure

    def read(self, image=None):
        if self.good <= 0:
            if self.failure == "raise":
                raise cv2.error("simulated decoder crash")
            return False, None
        self.good -= 1
        return self.inner.read(image)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    ("failure", "error"), [("false", "read() returned no frame"), ("raise", "simulated")]
)
def test_live_source_read_failure_reopens(failure, error, camera_factory):
    opens = []

    def opener(spec, **kwargs):
        opens.append(spec.display)
        if len(opens) == 2:
            raise CaptureError("camera rebooting")
        return _Flaky(SyntheticCapture(64, 48), good=5, failure=failure)

    log = StateLog()
    camera = camera_factory(
        "live", "rtsp://u:p@cam/x", opener=opener, on_state=log, stale_after=5, **FAST
    )
    camera.start()
    assert log.wait_for(CameraState.STREAMING, count=2)
    assert opens[:3] == ["rtsp://u:***@cam/x"] * 3
    assert log.states()[:3] == ["streaming", "reconnecting", "streaming"]
    assert error in log.events[1][1]
    assert camera.stats().reconnects >= 2


def test_from_config_accepts_any_object(tmp_path):
    config = SimpleNamespace(
        name="porch", source="synthetic:64x48@10", width=None, height=None, fps=None,
        loop=True, reopen_initial=0.5, reopen_max=4.0, stale_after=3.0,
    )  # fmt: skip
    camera = Camera.from_config(config, realtime=False)
    assert (camera.name, camera.source) == ("porch", "synthetic:64x48@10")
    with camera:
        assert camera.get(5).frame_id == 0
        with pytest.raises(CaptureError, match="already started or stopped"):
            camera.start()
    assert camera.state == "stopped"


def test_open_capture_errors_name_the_source(tmp_path):
    with pytest.raises(CaptureError, match="nothing.avi: no such file"):
        open_capture(Camera("x", str(tmp_path / "nothing.avi")).spec, name="x")
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(CaptureError, match="could not open"):
        open_capture(Camera("x", str(bad)).spec, name="x")


def test_from_config_takes_realtime_from_the_config():
    """``[[camera]] realtime = false`` reaches the camera: a file source goes lossless."""
    config = SimpleNamespace(name="clip", source="synthetic:64x48@10", realtime=False)
    assert Camera.from_config(config)._realtime is False
    assert Camera.from_config(SimpleNamespace(name="c", source="synthetic"))._realtime is True
