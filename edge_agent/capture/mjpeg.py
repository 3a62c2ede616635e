"""Decode an MJPG source at 1/2, 1/4 or 1/8 scale (``camera.decode_scale``).

A 224x224 model never sees most of a 640x480 frame's pixels: the resize averages them
away. libjpeg can scale while it decodes (in the DCT domain, skipping the fine
coefficients), so decoding at 1/2 costs less than a full decode, and the model's resize
then starts from a quarter of the pixels. FFmpeg hands over each compressed frame as it
is (``CAP_PROP_FORMAT = -1``) and OpenCV's ``imdecode`` decodes it reduced.

The camera then *is* a smaller camera, as if it had been asked for a smaller mode:
results, zones and snapshots are in the decoded frame's pixels.

A motion-gated camera reads its MJPG source the same way, at any scale, to skip the full
decode of frames in which nothing moved (see :class:`ReducedMjpeg`).

Only MJPG can be decoded this way (each frame is a JPEG). Other codecs and devices are
decoded by OpenCV as usual (with a warning when a ``decode_scale`` asked otherwise).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from edge_agent.capture.motion import MotionSettings, changed_fraction, motion_settings
from edge_agent.capture.sources import Capture, SourceKind, SourceSpec, open_capture
from edge_agent.errors import CaptureError

logger = logging.getLogger(__name__)

FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
MJPG_CODECS = ("MJPG", "MJPEG", "JPEG", "AVRN", "LJPG")
MAX_BAD_PACKETS = 8  # corrupt frames skipped in a row before a read fails


def fourcc_text(cap: Capture) -> str:
    """The source's codec as four characters ("" when it reports none)."""
    code = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
    text = code.to_bytes(4, "little").decode("ascii", "replace").strip("\0 ")
    return text if text.isprintable() else ""


class ReducedMjpeg:
    """A :class:`~edge_agent.capture.sources.Capture` over a raw-mode MJPG capture that
    decodes each compressed frame at ``1/scale``.

    With ``still`` (a motion-gated camera), a frame is first decoded as a 1/8 greyscale
    preview (about a fifth of a full decode). When it did not move (``still``'s
    threshold) since the last frame decoded in full, that frame is returned again (the
    same array: nothing writes into a delivered frame) and the full decode is skipped.
    The motion gate then finds it still as well, and the model's last results stand.
    Changes add up against that last decoded frame, so slow motion still gets decoded.
    """

    def __init__(self, cap: Capture, scale: int, still: MotionSettings | None = None):
        self._cap = cap
        self._flag = FLAGS[scale]
        self.scale = scale
        self._still = still
        self._last: np.ndarray | None = None  # the last frame decoded in full
        self._last_preview: np.ndarray | None = None
        self.skipped = 0  # full decodes skipped

    def isOpened(self) -> bool:
        return self._cap.isOpened()

    def read(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
        """The next frame, decoded reduced (``image`` is not reused: the decoder
        allocates, and the frame slot adopts the new array)."""
        for _ in range(MAX_BAD_PACKETS):
            ok, packet = self._cap.read()
            if not ok or packet is None or packet.size == 0:
                return False, None
            preview = None
            if self._still is not None:
                preview = decode(packet, cv2.IMREAD_REDUCED_GRAYSCALE_8)
                if self._unchanged(preview):
                    self.skipped += 1
                    return True, self._last
            frame = decode(packet, self._flag)
            if frame is not None:
                self._last, self._last_preview = frame, preview
                return True, frame
        raise CaptureError(
            f"{MAX_BAD_PACKETS} frames in a row are not JPEG images OpenCV reads: set "
            "camera.decode_scale = 1 and camera.motion_gate = false to decode with FFmpeg"
        )

    def _unchanged(self, preview: np.ndarray | None) -> bool:
        """Whether the preview shows nothing moved since the last full decode."""
        if preview is None or self._last_preview is None or self._still is None:
            return False
        changed = changed_fraction(preview, self._last_preview, self._still.pixel_delta)
        return changed < self._still.threshold

    def get(self, prop: int) -> float:
        return self._cap.get(prop)

    def set(self, prop: int, value: float) -> bool:
        return self._cap.set(prop, value)

    def release(self) -> None:
        self._cap.release()


def decode(packet: np.ndarray, flag: int) -> np.ndarray | None:
    """One compressed frame decoded with ``flag``; None when it is not a JPEG."""
    try:
        return cv2.imdecode(packet.reshape(-1), flag)
    except cv2.error:
        return None


def mjpeg_opener(camera: Any) -> Callable[..., Capture] | None:
    """The opener for a ``[[camera]]`` table: :func:`open_reduced` when it sets a
    ``decode_scale`` > 1 or a motion gate (whose still frames need no full decode),
    else None (the camera's default)."""
    still = motion_settings(camera)
    scale = getattr(camera, "decode_scale", 1)
    if scale == 1 and not still.enabled:
        return None
    return functools.partial(open_reduced, scale=scale, still=still)


def open_reduced(
    spec: SourceSpec,
    *,
    scale: int,
    name: str,
    still: MotionSettings | None = None,
    **kwargs: Any,
) -> Capture:
    """:func:`~edge_agent.capture.sources.open_capture`, decoding at ``1/scale`` where the
    source allows it (see the module docstring); in full otherwise, with a warning.
    ``still``: the camera's motion gate, to skip the full decode of still frames
    (:class:`ReducedMjpeg`).

    Raises:
        CaptureError: as ``open_capture``.
    """
    cap = open_capture(spec, name=name, **kwargs)
    if still is not None and not still.enabled:
        still = None
    if (scale == 1 and still is None) or spec.kind in (SourceKind.SYNTHETIC, SourceKind.DEVICE):
        if scale != 1:
            logger.warning(
                "camera %s: decode_scale %d applies to MJPG files and streams; for a "
                "device, ask for a smaller mode (camera.width, camera.height)",
                name,
                scale,
            )
        return cap
    codec = fourcc_text(cap).upper()
    if codec not in MJPG_CODECS and scale == 1:
        return cap  # only the gate asked: its frames are decoded in full as before
    if codec not in MJPG_CODECS:
        logger.warning(
            "camera %s: decode_scale %d needs MJPG, the source is %s: decoding in full",
            name,
            scale,
            codec or "of an unknown codec",
        )
        return cap
    if not cap.set(cv2.CAP_PROP_FORMAT, -1):
        logger.warning("camera %s: OpenCV gives no compressed frames: decoding in full", name)
        return cap
    return ReducedMjpeg(cap, scale, still)
