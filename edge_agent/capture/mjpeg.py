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

A motion-gated camera decoding reduced goes further (``motion``): it decodes a 1/8-scale
greyscale preview of each frame first (libjpeg then keeps only each block's mean: 0.45
ms against 0.69 for the 1/2 decode of a real 640x480 photo at quality 85 here, 0.08
against 0.22 for the flat demo clip), and hands the compressed frame over as a
:class:`~edge_agent.capture.frames.Deferred`. The motion gate judges the preview. A
frame whose preview differs from the previous frame's by the gate's own measure is
decoded here at once, beside the pipeline, as without the gate; the others are decoded
by the pipeline (:func:`develop`) only when the model is to see them (slow change that
added up, ``max_idle``, a new model). While the scene moves, each frame is decoded
first and its preview taken from the image (:func:`luma_preview`: 0.05 ms at 1/2, 0.20
in full), so motion costs no second pass over the JPEG; the first still frame after it
takes the JPEG's own preview, as the frames after it do.

A gated camera defers at ``decode_scale = 1`` too: its frames are then decoded in full by
libjpeg (as ``cv2.imread`` decodes a photo), not by FFmpeg's MJPG decoder as an ungated
camera's are. Which is cheaper depends on the picture (CPU per 640x480 frame, libjpeg
against FFmpeg: 0.52 / 0.46 ms for the flat demo clip, 1.28 / 1.53 for a noisy photo,
1.31 / 1.04 for a clean one), and their pixels differ by about one grey level on average
(more along sharp colour edges, where they upsample chroma differently). A still frame
costs only its preview (0.10 ms for the demo clip, 0.70 for the noisy photo). Moving
frames pay for it: the camera thread's CPU per frame went 1.21 -> 0.53 ms and 1.52 ->
0.73 for two real photos held still, and 1.04 -> 1.40 for one panned 2 pixels a frame,
0.47 -> 0.73 for the demo clip moving (libjpeg's decode, the preview from the image, and
on a slow pan a preview pass now and then). The gate is for scenes that are still most
of the time.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import cv2
import numpy as np

from edge_agent.capture.corrupt_frames import MAX_BAD_FRAMES, skip_budget
from edge_agent.capture.frames import Deferred, Frame
from edge_agent.capture.motion import MotionSettings, changed_fraction
from edge_agent.capture.sources import Capture, SourceKind, SourceSpec, open_capture
from edge_agent.capture.wrapped import WrappedCapture
from edge_agent.errors import CaptureError

logger = logging.getLogger(__name__)

# FFmpeg ignores EXIF orientation; imdecode would apply it and turn the camera's frames.
REDUCED = {
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
}
PREVIEW = cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION
FLAGS = {1: cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, **REDUCED}  # by scale
MJPG_CODECS = ("MJPG", "MJPEG", "JPEG", "AVRN", "LJPG")


def fourcc_text(cap: Capture) -> str:
    """The source's codec as four characters ("" when it reports none)."""
    code = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
    text = code.to_bytes(4, "little").decode("ascii", "replace").strip("\0 ")
    return text if text.isprintable() else ""


class ReducedMjpeg(WrappedCapture):
    """A :class:`~edge_agent.capture.sources.Capture` over a raw-mode MJPG capture that
    decodes each compressed frame at ``1/scale`` (1: in full, by libjpeg); with ``motion``
    (a gated camera's settings), a :class:`~edge_agent.capture.frames.Deferred` frame,
    decoded only when its preview moved since the previous frame's. A live source's read
    skips bad frames as :class:`~edge_agent.capture.corrupt_frames.SkipCorruptFrames` does:
    up to MAX_BAD_FRAMES in a row, within ``skip_budget(read_timeout)`` seconds."""

    def __init__(
        self,
        cap: Capture,
        scale: int,
        *,
        live: bool = False,
        motion: MotionSettings | None = None,
        read_timeout: float = 10.0,
    ):
        super().__init__(cap)
        self._flag = FLAGS[scale]
        self.scale = scale
        self._live = live  # a file skips bad frames to its end, as FFmpeg's decoder does
        self._budget = skip_budget(read_timeout)
        self._motion = motion
        self._preview: np.ndarray | None = None  # the previous frame's
        self._moving = False  # the previous frame moved: this one is decoded first
        self.bad_frames = 0

    def read(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray | Deferred | None]:
        """The next frame, decoded reduced, or deferred (``image`` is not reused: the
        decoder allocates, and the frame slot adopts the new array)."""
        bad, started = 0, time.monotonic()
        while bad < MAX_BAD_FRAMES or not self._live:
            ok, packet = self._cap.read()
            if not ok or packet is None or packet.size == 0:
                return False, None
            gate = self._motion
            frame = self._deferred(packet, gate) if gate else decode(packet, self._flag)
            if frame is not None:
                return True, frame
            bad += 1
            self.bad_frames += 1
            if self._live and time.monotonic() - started >= self._budget:
                break  # bad frames this slow: the read has had its time (a stop waits on it)
        # FFmpeg's decoder, which reads what libjpeg refuses, decodes an ungated camera's
        # frames at decode_scale 1.
        keys = ["decode_scale = 1"] if self.scale > 1 else []
        keys += ["motion_gate = false"] if self._motion else []
        raise CaptureError(
            f"{bad} frame(s) in a row are not JPEG images libjpeg reads: set "
            + " and ".join(f"camera.{key}" for key in keys)
        )

    def _deferred(self, packet: np.ndarray, gate: MotionSettings) -> Deferred | None:
        """The packet with its preview and decoded size, and its image if it moved since
        the previous frame; None when it is not a JPEG."""
        image: np.ndarray | None = None
        derived = self._moving
        if derived:
            # In motion, frames are decoded anyway: their preview comes from the image
            # (0.05 ms), not from a second pass over the JPEG (0.3-0.7 ms on real scenes).
            image = decode(packet, self._flag)
            preview = None if image is None else luma_preview(image, self.scale)
            size = None if image is None else (image.shape[1], image.shape[0])
        else:
            found, size = jpeg_size(packet), None
            preview = decode(packet, PREVIEW) if found is not None else None
            if found is not None:  # the size it decodes to
                size = reduced_size(found, self.scale)
        if preview is None or size is None:
            return None
        last, self._preview = self._preview, preview
        # Only a guess at the gate's verdict (it compares with the frame the model saw
        # last): a moving scene is decoded on this thread, in parallel, as ungated.
        moved = last is None or changed_fraction(preview, last, gate.pixel_delta) >= gate.threshold
        self._moving = moved
        if moved and image is None and (image := decode(packet, self._flag)) is None:
            return None
        if derived and not moved and (own := decode(packet, PREVIEW)) is not None:
            # The scene stopped: this frame carries the JPEG's own preview, the kind the
            # next ones have. A derived preview differs from it where colours clip (10
            # grey levels at saturated red edges): compared in turn, the two kinds kept
            # the camera decoding and the gate inferring (27 of 40 frames of a still
            # scene at motion_pixel_delta 5).
            preview = self._preview = own
        return Deferred(packet.reshape(-1), self._flag, preview, size, image)


def luma_preview(image: np.ndarray, scale: int) -> np.ndarray:
    """What the 1/8-scale greyscale decode gives, from a frame decoded at ``1/scale``: its
    luma averaged over blocks of ``8 / scale`` pixels (within a grey level or two on
    photos; up to 10 where the decode clipped saturated colours).

    The colours are averaged first and the luma taken of the small image (the luma is
    linear in them): 0.20 ms of CPU for a 640x480 frame where the luma of the whole
    frame first took 0.27, most of it in OpenCV's threads."""
    factor = 8 // scale
    if factor > 1:  # averaged before the luma: one pass over the frame, on this thread
        right, bottom = -image.shape[1] % factor, -image.shape[0] % factor
        if right or bottom:
            # A partial block at the edge: the encoder filled it with the edge pixels, and
            # its DC is their mean; a resize to libjpeg's size would shift every block.
            image = cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_REPLICATE)
        size = (image.shape[1] // factor, image.shape[0] // factor)
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def reduced_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """(width, height) of an image of ``size`` decoded at ``1/factor``: libjpeg rounds up."""
    return -(-size[0] // factor), -(-size[1] // factor)


def develop(frame: Frame) -> Frame:
    """The frame with its image decoded, if the camera deferred it.

    Raises:
        CaptureError: its JPEG cannot be decoded in full (its preview could be).
    """
    if frame.image is not None or frame.deferred is None:
        return frame
    image = decode(frame.deferred.packet, frame.deferred.flag)
    if image is None or image.ndim != 3:
        raise CaptureError(f"frame {frame.frame_id} is not a JPEG image the decoder reads")
    return frame._replace(image=image, deferred=None)


# The start-of-frame markers, which carry the image's size: SOF0-SOF15 but DHT (C4),
# JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}  # RSTn, SOI, TEM: no length field
_EOI = np.frombuffer(b"\xff\xd9", np.uint8)


def jpeg_size(packet: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header; None when there is none.

    Walks the marker segments from the start (not a byte search: an EXIF thumbnail
    carries its own SOF inside an APP1 segment). Bytes between segments are skipped up
    to the next marker, as libjpeg does ("extraneous bytes before marker", a warning):
    the decoders read such a frame, so it has a size.
    """
    data = memoryview(np.ascontiguousarray(packet).reshape(-1))  # no copy: bytes as ints
    if bytes(data[:2]) != b"\xff\xd8":
        return None
    at, end = 2, len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:  # extraneous bytes: on to the next 0xFF
            skip = data[at:].tobytes().find(b"\xff")
            if skip < 0:
                return None
            at += skip
            continue
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte before the marker
            at += 1
            continue
        if marker == 0x00:  # a stuffed 0xFF is no marker: extraneous too
            at += 2
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker in _SOF:
            if at + 9 > end:
                return None
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return (width, height) if width and height else None
        if marker == 0xDA:  # start of scan before any frame header
            return None
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def decode(packet: np.ndarray, flag: int) -> np.ndarray | None:
    """One compressed frame decoded with ``flag``; None when it is not a JPEG.

    A frame that does not end in an EOI marker (a camera that leaves it off, a frame cut
    short) is given one: OpenCV's reader refuses it otherwise, where FFmpeg's decoder
    (an ungated camera's) and libjpeg's own memory source read it, the missing data grey.
    """
    data = packet.reshape(-1)
    if data.size >= 2 and (data[-2] != 0xFF or data[-1] != 0xD9):
        data = np.concatenate((data, _EOI))
    try:
        return cv2.imdecode(data, flag)
    except cv2.error:
        return None


def open_reduced(
    spec: SourceSpec, *, scale: int, name: str, motion: MotionSettings | None = None, **kwargs: Any
) -> Capture:
    """:func:`~edge_agent.capture.sources.open_capture`, decoding at ``1/scale`` where the
    source allows it (see the module docstring); in full otherwise, with a warning.

    Args:
        motion: a gated camera's settings: its frames are deferred (see above), at every
            scale; a source that cannot defer is decoded as ungated, without a warning at
            ``scale = 1`` (the gate then tests the decoded frames).

    Raises:
        CaptureError: as ``open_capture``.
    """
    motion = motion if motion is not None and motion.enabled else None
    cap = open_capture(spec, name=name, **kwargs)
    if scale == 1 and motion is None:
        return cap
    if spec.kind in (SourceKind.SYNTHETIC, SourceKind.DEVICE):
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
        if scale == 1:
            return cap
        logger.warning(
            "camera %s: decode_scale %d needs MJPG, the source is %s: decoding in full",
            name,
            scale,
            codec or "of an unknown codec",
        )
        return cap
    if not cap.set(cv2.CAP_PROP_FORMAT, -1):
        if scale != 1:
            logger.warning("camera %s: OpenCV gives no compressed frames: decoding in full", name)
        return cap
    if spec.kind == SourceKind.FILE and _fields(open_capture(spec, name=name, **kwargs)):
        # Each frame is two JPEGs, one per field, which FFmpeg's decoder weaves into one.
        logger.warning("camera %s: interlaced MJPG (two fields a frame): decoding in full", name)
        cap.release()
        return open_capture(spec, name=name, **kwargs)
    live, timeout = spec.kind != SourceKind.FILE, kwargs.get("read_timeout", 10.0)
    return ReducedMjpeg(cap, scale, live=live, motion=motion, read_timeout=timeout)


def _fields(probe: Capture) -> bool:
    """Whether a file's first JPEG is a field: under 3/4 of the frame's height, as FFmpeg
    judges it. Read through a capture of its own, released here (a file of one JPEG image
    cannot be rewound)."""
    try:
        height = probe.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0
        ok, packet = probe.read() if probe.set(cv2.CAP_PROP_FORMAT, -1) else (False, None)
    finally:
        probe.release()
    size = jpeg_size(packet) if ok and packet is not None and packet.size else None
    return size is not None and size[1] * 4 < height * 3
