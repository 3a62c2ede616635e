"""Decode an MJPG source at 1/2, 1/4 or 1/8 scale (``camera.decode_scale``).

A 224x224 model never sees most of a 640x480 frame's pixels: the resize averages them
away. libjpeg can scale while it decodes (in the DCT domain, skipping the fine
coefficients), so decoding at 1/2 costs less than a full decode, and the model's resize
then starts from a quarter of the pixels. FFmpeg hands over each compressed frame as it
is (``CAP_PROP_FORMAT = -1``) and OpenCV's ``imdecode`` decodes it reduced.

The camera then *is* a smaller camera, as if it had been asked for a smaller mode:
results, zones and snapshots are in the decoded frame's pixels.

Only MJPG can be decoded this way (each frame is a JPEG). Other codecs, and sources
whose frames the JPEG decoder cannot read, are decoded in full, with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from edge_agent.capture.sources import Capture, SourceKind, SourceSpec, open_capture
from edge_agent.errors import CaptureError

logger = logging.getLogger(__name__)

# FFmpeg ignores EXIF orientation; imdecode would apply it and turn the camera's frames.
REDUCED = {
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
}
SCALES = (1, *REDUCED)
MJPG_CODECS = ("MJPG", "MJPEG", "JPEG", "AVRN", "LJPG")
MAX_BAD_PACKETS = 8  # corrupt frames skipped in a row before a read fails


def fourcc_text(cap: Capture) -> str:
    """The source's codec as four characters ("" when it reports none)."""
    code = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
    text = code.to_bytes(4, "little").decode("ascii", "replace").strip("\0 ")
    return text if text.isprintable() else ""


class ReducedMjpeg:
    """A :class:`~edge_agent.capture.sources.Capture` over a raw-mode MJPG capture that
    decodes each compressed frame at ``1/scale``."""

    def __init__(self, cap: Capture, scale: int, *, live: bool = False):
        self._cap = cap
        self._flag = REDUCED[scale]
        self.scale = scale
        self._live = live  # a file skips bad frames to its end, as FFmpeg's decoder does
        self.bad_frames = 0

    def isOpened(self) -> bool:
        return self._cap.isOpened()

    def read(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
        """The next frame, decoded reduced (``image`` is not reused: the decoder
        allocates, and the frame slot adopts the new array)."""
        bad = 0
        while bad < MAX_BAD_PACKETS or not self._live:
            ok, packet = self._cap.read()
            if not ok or packet is None or packet.size == 0:
                return False, None
            frame = decode(packet, self._flag)
            if frame is not None:
                return True, frame
            bad += 1
            self.bad_frames += 1
        raise CaptureError(
            f"{MAX_BAD_PACKETS} frames in a row are not JPEG images the reduced decoder "
            "reads: set camera.decode_scale = 1"
        )

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


def open_reduced(spec: SourceSpec, *, scale: int, name: str, **kwargs: Any) -> Capture:
    """:func:`~edge_agent.capture.sources.open_capture`, decoding at ``1/scale`` where the
    source allows it (see the module docstring); in full otherwise, with a warning.

    Raises:
        CaptureError: as ``open_capture``.
    """
    cap = open_capture(spec, name=name, **kwargs)
    if scale == 1 or spec.kind in (SourceKind.SYNTHETIC, SourceKind.DEVICE):
        if scale != 1:
            logger.warning(
                "camera %s: decode_scale %d applies to MJPG files and streams; for a "
                "device, ask for a smaller mode (camera.fit_model, or camera.width and height)",
                name,
                scale,
            )
        return cap
    codec = fourcc_text(cap).upper()
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
    return ReducedMjpeg(cap, scale, live=spec.kind != SourceKind.FILE)
