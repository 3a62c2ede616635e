"""Ask a V4L2 camera for its smallest mode that still covers the model's input.

OpenCV opens a device in 640x480, in the pixel format it picks (YUYV or MJPG), and every
frame is then converted or decoded and resized in full, though a 224x224 model uses a
fraction of those pixels. With ``camera.fit_model = true`` the device's frame sizes for
that pixel format are listed (``VIDIOC_ENUM_FRAMESIZES``) and the smallest one that:

* keeps the opened mode's aspect ratio (another ratio may crop the sensor's view),
* still covers the model's input: both sides for a stretched input, one side for a
  letterboxed one (the other side is padding either way),
* and is smaller than the opened mode (never a costlier one),

is requested. Devices that scale freely (stepwise or continuous sizes, e.g. the legacy
bcm2835-v4l2 Pi camera driver) are asked for the smallest size on their grid that keeps
the aspect ratio and covers the input.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import struct
import threading
from typing import Callable, NamedTuple

logger = logging.getLogger(__name__)

# struct v4l2_frmsizeenum: index, pixel_format, type, a 24-byte union, reserved[2].
_FRMSIZE = struct.Struct("=3I6I2I")
# _IOWR('V', 74, struct v4l2_frmsizeenum)
VIDIOC_ENUM_FRAMESIZES = (3 << 30) | (_FRMSIZE.size << 16) | (ord("V") << 8) | 74
_DISCRETE, _CONTINUOUS, _STEPWISE = 1, 2, 3
MAX_SIZES = 256  # a driver that never says EINVAL must not loop forever
MAX_GRID_STEPS = 4096  # a range's widths tried for one on the current aspect ratio
ASPECT_TOLERANCE = 0.02  # 4:3 at 1280x960 vs 1280x962 is the same view

Ioctl = Callable[[int, int, bytearray], object]


class FrameSize(NamedTuple):
    """A frame size in pixels."""

    width: int
    height: int


class SizeRange(NamedTuple):
    """A stepwise (or continuous, step 1) range of frame sizes."""

    smallest: FrameSize
    largest: FrameSize
    step: FrameSize


class DeviceSizes(NamedTuple):
    """The frame sizes a device offers for one pixel format."""

    discrete: tuple[FrameSize, ...] = ()
    ranges: tuple[SizeRange, ...] = ()


class ModelFit(NamedTuple):
    """What the model needs from a frame: its input size, and whether it letterboxes."""

    width: int
    height: int
    letterbox: bool


class FitTarget:
    """The model input a ``fit_model`` camera sizes its device to, at each open.

    The daemon aims it at the running model after each switch; the camera thread reads it
    when it opens the device, and reopens the device once after each change.
    """

    def __init__(self, fit: ModelFit):
        self._lock = threading.Lock()  # the daemon's pipeline thread writes, the camera reads
        self._fit = fit
        self._changed = False

    def get(self) -> ModelFit:
        """The model input to size the device to."""
        with self._lock:
            return self._fit

    def set(self, fit: ModelFit) -> bool:
        """Aim at another model input; True when it differs (the camera then reopens)."""
        with self._lock:
            if fit == self._fit:
                return False
            self._fit, self._changed = fit, True
            return True

    def take(self) -> ModelFit:
        """The model input to size the device to, now: a change already taken needs no
        further reopen."""
        with self._lock:
            self._changed = False
            return self._fit

    def take_changed(self) -> bool:
        """True once after each change: the camera thread's cue to reopen its device."""
        with self._lock:
            changed, self._changed = self._changed, False
            return changed


def covers(size: FrameSize, need: ModelFit) -> bool:
    """True when resizing ``size`` to the model's input never enlarges it."""
    wide, tall = size.width >= need.width, size.height >= need.height
    return (wide or tall) if need.letterbox else (wide and tall)


def same_aspect(a: FrameSize, b: FrameSize) -> bool:
    """True when two sizes show the same aspect ratio (within 2 %)."""
    return abs(a.width * b.height - a.height * b.width) <= ASPECT_TOLERANCE * b.width * a.height


def _in_range(span: SizeRange, need: ModelFit, current: FrameSize) -> FrameSize | None:
    """The smallest size on a range's grid with the current aspect that covers ``need``."""
    (low_w, low_h), (high_w, high_h) = span.smallest, span.largest
    step_w, step_h = max(1, span.step.width), max(1, span.step.height)
    ratios = (need.width / current.width, need.height / current.height)
    k = min(ratios) if need.letterbox else max(ratios)
    width = low_w + max(0, math.ceil((k * current.width - 1e-9 - low_w) / step_w)) * step_w
    # Coarse steps put a side's smallest multiple off the aspect: walk up the grid.
    for _ in range(MAX_GRID_STEPS):
        if width > high_w:
            return None
        want_h = width * current.height / current.width - 1e-9
        height = low_h + max(0, math.ceil((want_h - low_h) / step_h)) * step_h
        if height > high_h:
            return None
        size = FrameSize(width, height)
        if covers(size, need) and same_aspect(size, current):
            return size
        width += step_w
    return None


def choose_size(sizes: DeviceSizes, need: ModelFit, current: FrameSize) -> FrameSize | None:
    """The size to ask for, or None to keep ``current`` (nothing smaller covers ``need``).

    Args:
        sizes: what the device offers for its pixel format.
        need: the model's input.
        current: the device's default mode.
    """
    candidates = list(sizes.discrete)
    candidates += [s for s in (_in_range(r, need, current) for r in sizes.ranges) if s]
    fitting = [
        s
        for s in candidates
        if covers(s, need) and same_aspect(s, current) and s.width * s.height < math.prod(current)
    ]
    return min(fitting, key=lambda s: (s.width * s.height, s)) if fitting else None


def frame_sizes(path: str, fourcc: int, ioctl: Ioctl | None = None) -> DeviceSizes:
    """List a V4L2 device's frame sizes for a pixel format.

    Args:
        path: the device node, e.g. ``/dev/video0``.
        fourcc: the pixel format (``cv2.CAP_PROP_FOURCC`` as an int).
        ioctl: replaces ``fcntl.ioctl`` (tests).

    Raises:
        OSError: the device cannot be opened or is not a V4L2 capture device.
    """
    if ioctl is None:
        import fcntl  # POSIX only; devices are listed on Linux alone

        ioctl = fcntl.ioctl
    discrete: list[FrameSize] = []
    ranges: list[SizeRange] = []
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        for index in range(MAX_SIZES):
            buf = bytearray(_FRMSIZE.pack(index, fourcc, *[0] * 9))
            try:
                ioctl(fd, VIDIOC_ENUM_FRAMESIZES, buf)
            except OSError as exc:
                if exc.errno == errno.EINVAL:  # the end of the list
                    break
                raise
            _, _, kind, *union, _, _ = _FRMSIZE.unpack(buf)
            if kind == _DISCRETE:
                discrete.append(FrameSize(union[0], union[1]))
            elif kind in (_STEPWISE, _CONTINUOUS):
                min_w, max_w, step_w, min_h, max_h, step_h = union
                if kind == _CONTINUOUS:
                    step_w = step_h = 1
                step = FrameSize(step_w, step_h)
                ranges.append(SizeRange(FrameSize(min_w, min_h), FrameSize(max_w, max_h), step))
                break  # a range is the whole list
    finally:
        os.close(fd)
    return DeviceSizes(tuple(discrete), tuple(ranges))


def fitted_mode(
    name: str,
    path: str,
    fourcc: int,
    current: FrameSize,
    need: ModelFit,
    ioctl: Ioctl | None = None,
) -> FrameSize | None:
    """The mode to ask a device for so that it fits the model, or None to keep its own.

    Never raises: a device that cannot be listed keeps its default mode, with a warning.

    Args:
        name: the camera name, for log messages.
        path: its device node.
        fourcc: its current pixel format.
        current: its default frame size.
        need: the model's input.
        ioctl: replaces ``fcntl.ioctl`` (tests).
    """
    try:
        sizes = frame_sizes(path, fourcc, ioctl)
    except (OSError, ImportError, ValueError) as exc:
        logger.warning(
            "camera %s: fit_model: cannot list the frame sizes of %s (%s); keeping %dx%d",
            name, path, exc, *current,
        )  # fmt: skip
        return None
    if not sizes.discrete and not sizes.ranges:
        logger.warning(
            "camera %s: fit_model: %s lists no frame sizes for its pixel format %s; keeping %dx%d",
            name, path, fourcc.to_bytes(4, "little").decode("latin-1"), *current,
        )  # fmt: skip
        return None
    chosen = choose_size(sizes, need, current)
    if chosen is None:
        logger.info(
            "camera %s: fit_model: no mode of %s smaller than %dx%d with its aspect ratio "
            "covers the model input %dx%d; keeping it",
            name, path, *current, need.width, need.height,
        )  # fmt: skip
    else:
        logger.info(
            "camera %s: fit_model: asking %s for %dx%d (default %dx%d) for the model input %dx%d",
            name, path, *chosen, *current, need.width, need.height,
        )  # fmt: skip
    return chosen


def device_path(target: int | str) -> str:
    """The device node of a camera index or path."""
    return f"/dev/video{target}" if isinstance(target, int) else str(target)
