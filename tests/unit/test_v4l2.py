"""Sizing a V4L2 camera's mode to the model (``camera.fit_model``): choice and listing."""

from __future__ import annotations

import errno
import functools
import logging
import struct
from types import SimpleNamespace

import pytest

from edge_agent.capture import sources
from edge_agent.capture.sources import SourceKind, SourceSpec
from edge_agent.capture.v4l2 import (
    VIDIOC_ENUM_FRAMESIZES,
    DeviceSizes,
    FitTarget,
    FrameSize,
    ModelFit,
    SizeRange,
    choose_size,
    covers,
    fitted_mode,
    frame_sizes,
)
from edge_agent.config import CameraConfig
from edge_agent.daemon.startup import CameraFits

MJPG = int.from_bytes(b"MJPG", "little")
YUYV = int.from_bytes(b"YUYV", "little")
# What a common UVC webcam lists for MJPG.
WEBCAM = tuple(
    FrameSize(w, h)
    for w, h in [(1280, 720), (640, 480), (320, 240), (160, 120), (800, 600), (352, 288)]
)
MOBILENET = ModelFit(224, 224, letterbox=False)
YOLO = ModelFit(640, 640, letterbox=True)


def test_the_smallest_covering_mode_with_the_same_aspect_ratio_is_chosen():
    sizes = DeviceSizes(WEBCAM)
    assert choose_size(sizes, MOBILENET, FrameSize(640, 480)) == FrameSize(320, 240)
    # 160x120 would be enlarged; 352x288 (11:9) would change the view.
    assert choose_size(sizes, ModelFit(300, 300, False), FrameSize(640, 480)) is None
    assert choose_size(sizes, ModelFit(96, 96, False), FrameSize(640, 480)) == (160, 120)
    # A 16:9 default keeps 16:9; nothing smaller than 1280x720 is 16:9 here.
    assert choose_size(sizes, MOBILENET, FrameSize(1280, 720)) is None
    wide = DeviceSizes((*WEBCAM, FrameSize(640, 360), FrameSize(424, 240)))
    assert choose_size(wide, MOBILENET, FrameSize(1280, 720)) == (424, 240)


def test_a_letterboxed_model_needs_one_side_only():
    # 640x480 into 640x640 is scaled by 1: the rest is padding whatever the mode.
    assert covers(FrameSize(640, 480), YOLO) and not covers(FrameSize(320, 240), YOLO)
    assert not covers(FrameSize(640, 180), MOBILENET)
    assert choose_size(DeviceSizes(WEBCAM), YOLO, FrameSize(1280, 720)) is None  # no 16:9
    four_three = DeviceSizes((FrameSize(1280, 960), *WEBCAM))
    assert choose_size(four_three, YOLO, FrameSize(1280, 960)) == (640, 480)


def test_never_a_costlier_mode_than_the_default():
    assert choose_size(DeviceSizes(WEBCAM), MOBILENET, FrameSize(320, 240)) is None
    assert choose_size(DeviceSizes(WEBCAM), YOLO, FrameSize(320, 240)) is None
    assert choose_size(DeviceSizes(()), MOBILENET, FrameSize(640, 480)) is None


def test_a_freely_scaling_device_is_asked_for_the_covering_size_on_its_step():
    pi = DeviceSizes(ranges=(SizeRange(FrameSize(32, 32), FrameSize(2592, 1944), FrameSize(2, 2)),))
    # 4:3 covering 224x224 when stretched: 299x224.25; on the grid of 2 from 32, 300x226.
    assert choose_size(pi, MOBILENET, FrameSize(1024, 768)) == (300, 226)
    assert choose_size(pi, YOLO, FrameSize(1024, 768)) == (640, 480)
    coarse = DeviceSizes(
        ranges=(SizeRange(FrameSize(64, 48), FrameSize(640, 480), FrameSize(64, 48)),)
    )
    assert choose_size(coarse, MOBILENET, FrameSize(640, 480)) == (320, 240)
    # Steps of 64: 448x384 (the smallest multiples) is not 4:3; 512x384 is.
    grid = DeviceSizes(
        ranges=(SizeRange(FrameSize(64, 64), FrameSize(2592, 2592), FrameSize(64, 64)),)
    )
    assert choose_size(grid, ModelFit(300, 300, False), FrameSize(640, 480)) == (512, 384)
    assert choose_size(grid, ModelFit(300, 300, False), FrameSize(1024, 768)) == (512, 384)
    small = DeviceSizes(
        ranges=(SizeRange(FrameSize(16, 16), FrameSize(200, 150), FrameSize(1, 1)),)
    )
    assert choose_size(small, MOBILENET, FrameSize(640, 480)) is None  # cannot cover


class FakeDevice:
    """``fcntl.ioctl`` of a V4L2 device that lists frame sizes for one pixel format."""

    def __init__(self, fourcc: int, entries: list[tuple[int, tuple[int, ...]]], fail: int = 0):
        self.fourcc, self.entries, self.fail = fourcc, entries, fail
        self.calls = 0

    def __call__(self, fd: int, request: int, buf: bytearray) -> int:
        assert request == VIDIOC_ENUM_FRAMESIZES == 0xC02C564A and len(buf) == 44
        self.calls += 1
        if self.fail:
            raise OSError(self.fail, "not a V4L2 device")
        index, fourcc = struct.unpack_from("=2I", buf)
        if fourcc != self.fourcc or index >= len(self.entries):
            raise OSError(errno.EINVAL, "Invalid argument")
        kind, union = self.entries[index]
        struct.pack_into("=3I6I", buf, 0, index, fourcc, kind, *union, *[0] * (6 - len(union)))
        return 0


@pytest.fixture
def node(tmp_path):
    path = tmp_path / "video0"  # frame_sizes opens it; the fake answers the ioctls
    path.write_bytes(b"")
    return str(path)


def test_discrete_sizes_are_listed_until_the_driver_says_einval(node):
    device = FakeDevice(MJPG, [(1, tuple(s)) for s in WEBCAM])
    assert frame_sizes(node, MJPG, device) == DeviceSizes(WEBCAM)
    assert device.calls == len(WEBCAM) + 1
    assert frame_sizes(node, YUYV, device) == DeviceSizes()  # another format: none


def test_stepwise_and_continuous_sizes_are_one_range(node):
    device = FakeDevice(YUYV, [(3, (32, 2592, 2, 32, 1944, 2)), (1, (640, 480))])
    expected = SizeRange(FrameSize(32, 32), FrameSize(2592, 1944), FrameSize(2, 2))
    assert frame_sizes(node, YUYV, device) == DeviceSizes((), (expected,))
    device = FakeDevice(YUYV, [(2, (32, 2592, 7, 32, 1944, 7))])
    assert frame_sizes(node, YUYV, device).ranges[0].step == (1, 1)


def test_a_device_that_cannot_be_listed_keeps_its_mode(node, tmp_path, caplog):
    caplog.set_level(logging.INFO, "edge_agent.capture.v4l2")
    current = FrameSize(640, 480)
    # A format the device cannot list (EINVAL at once, e.g. a metadata node): a warning.
    assert fitted_mode("front", node, YUYV, current, MOBILENET, FakeDevice(MJPG, [])) is None
    assert (
        fitted_mode("front", node, MJPG, current, MOBILENET, FakeDevice(MJPG, [], errno.ENOTTY))
        is None
    )
    assert fitted_mode("front", str(tmp_path / "gone"), MJPG, current, MOBILENET) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all(w.startswith("camera front: fit_model: ") for w in warnings)
    assert f"{node} lists no frame sizes for its pixel format YUYV; keeping 640x480" in warnings[0]
    assert "cannot list the frame sizes" in warnings[1] and "keeping 640x480" in warnings[1]


class FakeCapture:
    """The ``get``/``set`` of an opened OpenCV capture of a 640x480 MJPG device."""

    def __init__(self):
        self.props = {3: 640.0, 4: 480.0, 5: 30.0, 6: float(MJPG)}
        self.sets: list[tuple[int, float]] = []

    def get(self, prop: int) -> float:
        return self.props[prop]

    def set(self, prop: int, value: float) -> bool:
        self.sets.append((prop, value))
        self.props[prop] = value
        return True


def test_an_opened_device_is_asked_for_the_fitted_mode(node, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    device = FakeDevice(MJPG, [(1, tuple(s)) for s in WEBCAM])
    monkeypatch.setattr(sources, "fitted_mode", functools.partial(fitted_mode, ioctl=device))
    cap, spec = FakeCapture(), SourceSpec(SourceKind.DEVICE, node, node)
    chosen = sources._fitted(cap, "front", spec, MOBILENET)
    assert chosen == (320, 240)
    sources._apply_mode(cap, "front", *chosen, None)
    assert cap.sets == [(3, 320.0), (4, 240.0)]
    assert f"camera front: fit_model: asking {node} for 320x240 (default 640x480)" in caplog.text


def test_a_fit_target_reports_each_change_once():
    target = FitTarget(MOBILENET)
    assert not target.set(ModelFit(224, 224, False)) and not target.take_changed()
    assert target.set(YOLO) and target.get() == YOLO
    assert target.take_changed() and not target.take_changed()
    # Opened for the new input during an outage: no second reopen for the same change.
    assert target.set(MOBILENET) and target.take() == MOBILENET and not target.take_changed()


def test_the_daemon_aims_fitted_cameras_at_each_new_model(caplog):
    caplog.set_level(logging.INFO, "edge_agent.daemon.startup")

    def running(width, height, resize):
        pre = SimpleNamespace(width=width, height=height, resize=resize)
        return SimpleNamespace(current=SimpleNamespace(codec=SimpleNamespace(preprocessor=pre)))

    supervisor = running(224, 224, "stretch")
    refreshed = []
    cameras = [
        CameraConfig(name="front", source=0, fit_model=True),
        CameraConfig(name="yard", source=1),
        CameraConfig(name="clip", source="clip.avi", fit_model=True),  # no modes to fit
    ]
    fits = CameraFits(supervisor, cameras, then=lambda: refreshed.append(1))
    assert set(fits.targets) == {"front"} and fits.targets["front"].get() == MOBILENET
    fits.after_switch()  # a backend switch: same model input, no reopen
    assert not fits.targets["front"].take_changed() and refreshed == [1]
    supervisor.current = running(640, 640, "letterbox").current  # a model update
    fits.after_switch()
    assert fits.targets["front"].get() == YOLO and fits.targets["front"].take_changed()
    assert refreshed == [1, 1]
    assert "camera front: fit_model: the model input is now 640x640 (letterboxed)" in caplog.text
