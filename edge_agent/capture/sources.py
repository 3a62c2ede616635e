"""Camera source specs: parse what the config says, mask credentials, open the capture.

A source is one of:

* a V4L2 device: an index (``0`` or ``"0"``) or a path (``/dev/video0``,
  ``/dev/v4l/by-id/...``); opened with ``cv2.CAP_V4L2`` on Linux;
* a network stream: ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http://``, ``https://``
  (HTTP covers MJPEG over ``multipart/x-mixed-replace``); opened with FFmpeg, with open
  and read timeouts so a dead camera cannot block the capture thread for long;
* a video file (``clip.avi`` or ``file:///data/clip.mp4``), paced at its own frame rate;
* ``synthetic`` / ``synthetic:WxH`` / ``synthetic:WxH@fps``: a generated test pattern.

RTSP transport: when ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is unset, OpenCV itself passes
``rtsp_flags=prefer_tcp`` to FFmpeg, which is what edge-agent wants (no UDP packet loss
smearing frames). That variable is process-wide and read on every open from any thread,
so edge-agent never sets it; an operator who sets it (e.g. in the systemd unit) replaces
that default and should include ``rtsp_transport;tcp`` themselves.

V4L2 has no per-capture read timeout in OpenCV: a stalled device blocks ``read()`` for
the backend's ``select()`` timeout, ``OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT`` seconds (10 by
default, read once per process). Set it in the service environment to bound stalls.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from typing import NamedTuple, Protocol, Union
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from edge_agent.capture.corrupt_frames import SkipCorruptFrames
from edge_agent.capture.v4l2 import FrameSize, ModelFit, device_path, fitted_mode
from edge_agent.config.url_checks import STREAM_SCHEMES, SYNTHETIC_MAX_FPS, SYNTHETIC_SIDES
from edge_agent.errors import CaptureError, ConfigError
from edge_agent.redaction import mask_credentials

logger = logging.getLogger(__name__)

SourceLike = Union[str, int]


class SourceKind:
    """The four kinds of source; plain strings so they serialize as-is."""

    DEVICE = "device"
    STREAM = "stream"
    FILE = "file"
    SYNTHETIC = "synthetic"


SYNTHETIC_DEFAULT = (640, 480, 30.0)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SYNTHETIC = re.compile(
    r"^synthetic(?::(?P<w>\d+)x(?P<h>\d+))?(?:@(?P<fps>\d+(?:\.\d+)?))?$", re.IGNORECASE
)


class SourceSpec(NamedTuple):
    """A parsed camera source.

    Attributes:
        kind: one of :class:`SourceKind`.
        target: what OpenCV opens: device index (int) or path, URL (credentials
            included, never log it), file path; ``""`` for synthetic sources.
        display: the source with credentials masked; safe for logs and MQTT.
        width, height, fps: the size and rate given in a ``synthetic:WxH@fps`` spec.
    """

    kind: str
    target: int | str
    display: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None

    @property
    def paced(self) -> bool:
        """True for sources read at a chosen rate (files, synthetic), not a live clock."""
        return self.kind in (SourceKind.FILE, SourceKind.SYNTHETIC)


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` the camera thread uses."""

    def isOpened(self) -> bool: ...

    def read(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]: ...

    def get(self, prop: int) -> float: ...

    def set(self, prop: int, value: float) -> bool: ...

    def release(self) -> None: ...


OPENCV_LOG_ERROR = 2  # cv2.setLogLevel: 0 silent .. 3 warning (its default) .. 6 verbose


def quiet_opencv(debug: bool) -> None:
    """Keep OpenCV's own warnings off stderr unless the daemon logs at DEBUG level.

    They repeat, unformatted, what the camera thread logs itself ("can't open camera by
    index", "Stream timeout triggered" at every reopen attempt); FFmpeg's error lines,
    which carry the reason (e.g. "Connection refused"), are FFmpeg's and stay.
    """
    if debug:
        return
    # OpenCV 4 has cv2.setLogLevel; OpenCV 5 moved it to cv2.utils.logging.
    api = getattr(getattr(cv2, "utils", None), "logging", None)
    set_level = getattr(api, "setLogLevel", None) or getattr(cv2, "setLogLevel", None)
    if set_level is not None:
        set_level(OPENCV_LOG_ERROR)


def parse_source(source: SourceLike) -> SourceSpec:
    """Classify a configured camera source; pure (touches neither OpenCV nor the disk).

    Args:
        source: device index, device path, stream URL, file path or synthetic spec.

    Returns:
        The :class:`SourceSpec`.

    Raises:
        ConfigError: the source is empty, a negative index, an unsupported URL scheme, a
            URL without a host, a malformed synthetic spec, or a file name not in UTF-8.
    """
    if isinstance(source, bool) or not isinstance(source, (int, str)):
        raise ConfigError(f"camera source must be a string or device index, got {source!r}")
    if isinstance(source, int):
        return _device_index(source)
    text = source.strip()
    if not text:
        raise ConfigError("camera source is empty")
    if text.lstrip("-").isdigit():
        return _device_index(int(text))
    lowered = text.lower()
    if lowered == "synthetic" or lowered.startswith(("synthetic:", "synthetic@")):
        return _synthetic(text)
    scheme_match = _SCHEME.match(text)
    if scheme_match:
        return _url(text, scheme_match.group(1).lower())
    if text.startswith("/dev/"):
        return SourceSpec(SourceKind.DEVICE, text, text)
    try:
        text.encode("utf-8")  # a command-line name may not be: OpenCV's binding crashes on it
    except UnicodeEncodeError as exc:
        raise ConfigError(f"camera source {text!a}: the file name is not valid UTF-8") from exc
    path = os.path.expanduser(text)
    return SourceSpec(SourceKind.FILE, path, path)


def _device_index(index: int) -> SourceSpec:
    """A V4L2 device by index."""
    if index < 0:
        raise ConfigError(f"camera device index must be >= 0, got {index}")
    return SourceSpec(SourceKind.DEVICE, index, f"/dev/video{index}")


def _synthetic(text: str) -> SourceSpec:
    """``synthetic[:WxH][@fps]``."""
    match = _SYNTHETIC.match(text)
    if not match:
        raise ConfigError(f"synthetic source must look like synthetic:640x480@30, got {text!r}")
    width = int(match["w"]) if match["w"] else None
    height = int(match["h"]) if match["h"] else None
    fps = float(match["fps"]) if match["fps"] else None
    low, high = SYNTHETIC_SIDES
    if width is not None and not (low <= width <= high and low <= (height or 0) <= high):
        raise ConfigError(f"synthetic size must be {low}..{high} per side, got {width}x{height}")
    if fps is not None and not 0 < fps <= SYNTHETIC_MAX_FPS:
        raise ConfigError(f"synthetic fps must be in (0, {SYNTHETIC_MAX_FPS:g}], got {fps:g}")
    return SourceSpec(SourceKind.SYNTHETIC, "", text.lower(), width, height, fps)


def _url(text: str, scheme: str) -> SourceSpec:
    """A stream URL or a ``file://`` URL."""
    display = mask_credentials(text)
    if scheme == "file":
        path = unquote(urlsplit(text).path)
        if not path:
            raise ConfigError(f"file URL without a path: {display!r}")
        return SourceSpec(SourceKind.FILE, path, path)
    if scheme not in STREAM_SCHEMES:
        supported = ", ".join(sorted({*STREAM_SCHEMES, "file"}))
        raise ConfigError(f"unsupported camera URL scheme {scheme!r} in {display!r} ({supported})")
    try:
        host = urlsplit(text).hostname
    except ValueError as exc:  # e.g. a malformed port or IPv6 literal
        raise ConfigError(f"malformed camera URL {display!r}: {exc}") from exc
    if not host:
        raise ConfigError(f"camera URL without a host: {display!r}")
    return SourceSpec(SourceKind.STREAM, text, display)


def capture_api(spec: SourceSpec) -> int:
    """The OpenCV backend (``apiPreference``) for a source.

    Args:
        spec: a parsed source.

    Returns:
        ``cv2.CAP_V4L2`` for devices on Linux, ``cv2.CAP_FFMPEG`` for streams and files
        when this OpenCV has FFmpeg, else ``cv2.CAP_ANY``.
    """
    if spec.kind == SourceKind.DEVICE:
        return cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    if spec.kind in (SourceKind.STREAM, SourceKind.FILE) and _has_ffmpeg():
        return cv2.CAP_FFMPEG
    return cv2.CAP_ANY


def _has_ffmpeg() -> bool:
    """Whether this OpenCV build has the FFmpeg backend."""
    try:
        return bool(cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG))
    except (AttributeError, cv2.error):  # very old OpenCV: assume the usual wheel
        return True


def open_params(spec: SourceSpec, *, open_timeout: float, read_timeout: float) -> list[int]:
    """The ``params`` list passed to ``cv2.VideoCapture`` at open time.

    Only streams get any: FFmpeg's open and per-read timeouts. Backends refuse to open
    when given a parameter they do not know, so nothing else is passed here.

    Args:
        spec: a parsed source.
        open_timeout, read_timeout: seconds.

    Returns:
        A flat ``[prop, value, ...]`` list of ints (possibly empty).
    """
    if spec.kind != SourceKind.STREAM or capture_api(spec) != cv2.CAP_FFMPEG:
        return []
    params: list[int] = []
    for name, seconds in (
        ("CAP_PROP_OPEN_TIMEOUT_MSEC", open_timeout),
        ("CAP_PROP_READ_TIMEOUT_MSEC", read_timeout),
    ):
        prop = getattr(cv2, name, None)
        if prop is not None:  # OpenCV >= 4.6
            params += [int(prop), max(1, round(seconds * 1000))]
    return params


def open_capture(
    spec: SourceSpec,
    *,
    name: str,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    open_timeout: float = 10.0,
    read_timeout: float = 10.0,
    fit: ModelFit | None = None,
) -> Capture:
    """Open a source; the caller owns (and must release) the returned capture.

    Args:
        spec: a parsed source.
        name: the camera name, for log messages.
        width, height, fps: requested device mode (devices), or the pattern size and
            rate (synthetic, when the spec gives none); ignored for files and streams.
        open_timeout, read_timeout: seconds, for network streams.
        fit: a device given no width and height is asked for its smallest mode that
            covers this model input (``camera.fit_model``, see capture/v4l2.py).

    Returns:
        An opened ``cv2.VideoCapture`` or :class:`~edge_agent.capture.synthetic.SyntheticCapture`.

    Raises:
        CaptureError: the file or device does not exist, or OpenCV could not open it.
    """
    if spec.kind == SourceKind.SYNTHETIC:
        from edge_agent.capture.synthetic import SyntheticCapture

        default_w, default_h, default_fps = SYNTHETIC_DEFAULT
        return SyntheticCapture(
            spec.width or width or default_w,
            spec.height or height or default_h,
            spec.fps or fps or default_fps,
        )
    if spec.kind == SourceKind.FILE and not os.path.isfile(str(spec.target)):
        raise CaptureError(f"{spec.display}: no such file")
    if spec.kind == SourceKind.DEVICE:
        path = spec.display if isinstance(spec.target, int) else str(spec.target)
        if sys.platform.startswith("linux") and not os.path.exists(path):
            raise CaptureError(f"{path}: no such device")
    params = open_params(spec, open_timeout=open_timeout, read_timeout=read_timeout)
    try:
        cap = cv2.VideoCapture(spec.target, capture_api(spec), params)
    except cv2.error as exc:
        raise CaptureError(f"{spec.display}: {mask_credentials(str(exc)).strip()}") from exc
    if not cap.isOpened():
        cap.release()
        raise CaptureError(f"{spec.display}: OpenCV could not open it")
    if spec.kind == SourceKind.DEVICE:
        if fit is not None and not (width and height):
            width, height = _fitted(cap, name, spec, fit) or (width, height)
        _apply_mode(cap, name, width, height, fps)
    return cap if spec.kind == SourceKind.FILE else SkipCorruptFrames(cap, name, read_timeout)


def _fitted(cap: Capture, name: str, spec: SourceSpec, fit: ModelFit) -> FrameSize | None:
    """The mode of an opened device that fits the model, or None to keep its default."""
    current = FrameSize(
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    )
    if min(current) <= 0:
        return None
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
    return fitted_mode(name, device_path(spec.target), fourcc, current, fit)


def source_fps(cap: Capture, fallback: float) -> float:
    """The frame rate a capture reports, or ``fallback`` when it reports none.

    Args:
        cap: an opened capture.
        fallback: frames per second to use instead.

    Returns:
        A rate in (0, 1000].
    """
    native = cap.get(cv2.CAP_PROP_FPS)
    # Containers without a rate report 0, NaN, or a timebase like 90000.
    if isinstance(native, float) and math.isfinite(native) and 0 < native <= 1000:
        return native
    return fallback


def file_identity(path: str | int) -> tuple[int, ...] | None:
    """(device, inode, size, mtime) of a file, None if it is missing: spots replacements.

    Args:
        path: the file path.

    Returns:
        The identity tuple, or None.
    """
    try:
        st = os.stat(str(path))
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _apply_mode(
    cap: Capture, name: str, width: int | None, height: int | None, fps: float | None
) -> None:
    """Ask a device for a mode and log what it actually gives (drivers round or refuse)."""
    if width and height:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(width))
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(height))
    if fps:
        cap.set(cv2.CAP_PROP_FPS, float(fps))
    got_w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    got_h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    got_fps = cap.get(cv2.CAP_PROP_FPS)
    if (width and height and (got_w, got_h) != (width, height)) or (
        fps and abs(got_fps - fps) > 0.5
    ):
        logger.warning(
            "camera %s: asked for %sx%s@%s, device gives %dx%d@%.1f",
            name, width, height, fps, got_w, got_h, got_fps,
        )  # fmt: skip
    else:
        logger.info("camera %s: device mode %dx%d@%.1f", name, got_w, got_h, got_fps)
