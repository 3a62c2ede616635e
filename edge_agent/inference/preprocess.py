"""Camera frame -> model input tensor, in place: resize/letterbox, BGR->RGB, LUT.

Every step writes into a preallocated buffer, and the last one (the quantization table)
writes straight into the destination, which is the interpreter's input tensor or a
shared-memory slot for the inference worker. No float image is ever made.

When one table serves all three channels and it is an affine map with rounding (the
usual case: the model's scale and zero point after ``pixel / 255``), it is applied as
``cv2.convertScaleAbs``, a SIMD multiply-add-round, about twice as fast as the table
lookup. That is used only after proving it gives the table's value for all 256 pixels
under every arithmetic OpenCV may use for it (fused or separate multiply-add in
float32); otherwise the table is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from edge_agent.errors import ModelError
from edge_agent.inference.geometry import Fit, plan_fit
from edge_agent.inference.quantization import (
    InputLUT,
    Normalization,
    build_lut,
    default_normalization,
    normalization,
)
from edge_agent.inference.tensors import TensorSpec

# Ultralytics letterboxes with grey 114; the reference outputs were made that way.
PAD_VALUE = 114
INTERPOLATIONS = ("auto", "linear")
MAX_PLANS = 8  # frame sizes a preprocessor keeps a plan for
# "auto" shrinks with INTER_AREA only from this factor up (see resize_interpolation).
AREA_FROM = 2.0
_PIXELS = np.arange(256, dtype=np.uint8)


class AffineQuant(NamedTuple):
    """``q = clamp(round(pixel * alpha + beta))`` as cv2.convertScaleAbs computes it.

    ``flip``: the input is int8, so the kernel computes ``q + 128`` as uint8 and the sign
    bit is flipped afterwards (two's complement of ``q`` is ``(q + 128) ^ 0x80``).
    """

    alpha: float
    beta: float
    flip: bool


def _round_u8(x: np.ndarray) -> np.ndarray:
    """What saturate_cast<uchar> makes of float32 |x|: round half to even, clamp 0..255."""
    return np.clip(np.rint(np.abs(x.astype(np.float64))), 0, 255).astype(np.uint8)


def affine_quant(spec: TensorSpec, norm: Normalization, table: np.ndarray) -> AffineQuant | None:
    """The convertScaleAbs form of a one-channel quantization table, when it is exact.

    Args:
        spec: the (uint8 or int8) input tensor.
        norm: the normalization the table was built with.
        table: the table, shape (1, 256, 1).

    Returns:
        The parameters, or None when some pixel value would come out different from the
        table (then the table is used).
    """
    if spec.dtype not in (np.uint8, np.int8) or len(set(norm.mean)) != 1 or len(set(norm.std)) != 1:
        return None
    flip = spec.dtype == np.int8
    k = 1.0 / (norm.std[0] * spec.quant.scale)
    alpha = np.float32(k)
    beta = np.float32(spec.quant.zero_point - norm.mean[0] * k + (128 if flip else 0))
    want = table.reshape(256).view(np.uint8) ^ (0x80 if flip else 0)
    p = _PIXELS.astype(np.float32)
    candidates = (
        # Multiply, round to float32, add (a scalar loop without FMA).
        _round_u8(p * alpha + beta),
        # Fused multiply-add: one rounding of the exact p * alpha + beta (float64 holds
        # the product of an 8-bit and a 24-bit significand exactly).
        _round_u8((p.astype(np.float64) * float(alpha) + float(beta)).astype(np.float32)),
        # And what this OpenCV build really does.
        cv2.convertScaleAbs(_PIXELS.reshape(1, 256), alpha=float(alpha), beta=float(beta))[0],
    )
    if all(np.array_equal(c, want) for c in candidates):
        return AffineQuant(float(alpha), float(beta), flip)
    return None


def input_geometry(spec: TensorSpec) -> tuple[int, int]:
    """(height, width) of an NHWC image input with 3 channels.

    Raises:
        ModelError: the input is not a [1, H, W, 3] (or [H, W, 3]) image tensor, or its
            size is left to run time (a -1 in its shape signature other than the batch).
    """
    shape = spec.shape[1:] if len(spec.shape) == 4 else spec.shape
    if len(shape) != 3 or shape[2] != 3 or (len(spec.shape) == 4 and spec.shape[0] != 1):
        raise ModelError(f"input {spec.name!r} shape {list(spec.shape)} is not [1, H, W, 3]")
    # A dynamic batch is run as 1; a dynamic size has only a placeholder in ``shape``
    # (Keras' None height/width convert to 1x1), so running it would silently shrink
    # every frame to that.
    sized = spec.signature[1:] if len(spec.signature) == 4 else spec.signature
    if any(d < 0 for d in sized):
        raise ModelError(
            f"input {spec.name!r} has a dynamic shape (shape_signature "
            f"{list(spec.signature)}, placeholder {list(spec.shape)}): export the model "
            "with a fixed input size, e.g. [1, 224, 224, 3]"
        )
    return int(shape[0]), int(shape[1])


def resize_interpolation(src_w: int, src_h: int, new_w: int, new_h: int, mode: str) -> int:
    """The OpenCV interpolation that resizes ``src_w x src_h`` to ``new_w x new_h``.

    ``"linear"`` is always bilinear (Ultralytics' LetterBox). ``"auto"`` (pycoral-style
    classification and SSD) is INTER_AREA when either axis shrinks by a factor of 2 or
    more, where bilinear would skip pixels and alias (as before this rule; a stretch that
    also enlarges the other axis skips some with either filter), and bilinear otherwise.
    Below 2, bilinear's samples are under two pixels apart and weigh every pixel: from a
    1/2 decode (320x240 -> 224x224) it costs 0.08 ms against INTER_AREA's 0.51 here, and
    over 100 crops of the shared photos it is as close to the full-size INTER_AREA
    reference, within sampling noise (docs/BENCHMARKS.md).
    """
    if mode == "linear" or (new_w >= src_w and new_h >= src_h):
        return cv2.INTER_LINEAR
    if src_w >= AREA_FROM * new_w or src_h >= AREA_FROM * new_h:
        return cv2.INTER_AREA
    return cv2.INTER_LINEAR


class Preprocessor:
    """Fits BGR frames into one model input and quantizes them with a lookup table.

    Args:
        spec: the model's input tensor.
        resize: "stretch" or "letterbox".
        mean, std: per-channel normalization override (None: derived from the model).
        interpolation: "auto" (INTER_AREA when shrinking by 2 or more, bilinear
            otherwise: the pycoral-style classification/SSD path, see
            :func:`resize_interpolation`) or "linear" (always bilinear, as Ultralytics'
            LetterBox resizes).
    """

    def __init__(
        self,
        spec: TensorSpec,
        *,
        resize: str = "stretch",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str = "auto",
    ):
        if resize not in ("stretch", "letterbox"):
            raise ValueError(f"resize must be stretch or letterbox, got {resize!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be auto or linear, got {interpolation!r}")
        self.interpolation = interpolation
        self.spec = spec
        self.resize = resize
        self.height, self.width = input_geometry(spec)
        self.norm: Normalization = (
            normalization(mean, std)
            if mean is not None and std is not None
            else default_normalization(spec)
        )
        self.lut: InputLUT = build_lut(spec, self.norm)
        table = self.lut.table
        # One channel's table serves all three when they are equal: a third faster.
        self._table = table[:, :, :1].copy() if (table == table[:, :, :1]).all() else table
        # SIMD multiply-add instead of the lookup when that is exact (see module doc).
        self.affine = (
            affine_quant(spec, self.norm, self._table)
            if self._table.shape[2] == 1 and not self.lut.identity
            else None
        )
        # What the letterbox pad becomes after quantization, per channel; a scalar when
        # the channels agree, since numpy fills with a scalar ~100x faster than with a
        # per-channel vector.
        pad = table[0, PAD_VALUE].copy()
        self._pad = pad[0] if (pad == pad[0]).all() else pad
        # Per frame size, its Fit and interpolation: cameras of several sizes share a model.
        self._plans: dict[tuple[int, int], tuple[Fit, int]] = {}
        self._resized = np.empty(0, np.uint8)  # flat, as large as the input: any Fit fits
        self._rgb = np.empty(0, np.uint8)
        self._interp = cv2.INTER_LINEAR

    def plan(self, src_w: int, src_h: int) -> Fit:
        """The Fit for a source size (cached per size: frames alternating between cameras
        of two sizes neither plan nor allocate again)."""
        known = self._plans.get((src_w, src_h))
        if known is None:
            fit = plan_fit(src_w, src_h, self.width, self.height, self.resize)
            interp = resize_interpolation(src_w, src_h, fit.new_w, fit.new_h, self.interpolation)
            if len(self._plans) >= MAX_PLANS:  # a stream changing size again and again
                self._plans.clear()
            known = self._plans[(src_w, src_h)] = (fit, interp)
            if not self._resized.size:
                self._resized = np.empty(self.height * self.width * 3, np.uint8)
                self._rgb = np.empty(self.height * self.width * 3, np.uint8)
        fit, self._interp = known
        return fit

    def _scratch(self, flat: np.ndarray, fit: Fit) -> np.ndarray:
        """A contiguous image of the fitted size over the start of a flat buffer."""
        return flat[: fit.new_h * fit.new_w * 3].reshape(fit.new_h, fit.new_w, 3)

    def quantize(self, rgb: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Normalize and quantize an RGB uint8 image into ``out``, bit-exact with the
        formula (the table), by the fastest exact means (see the module docstring).

        Args:
            rgb: HxWx3 RGB uint8 image.
            out: HxWx3 array of the input's dtype (may be a strided view).

        Returns:
            ``out``.

        Raises:
            RuntimeError: OpenCV could not write into ``out`` in place.
        """
        a = self.affine
        if a is not None:
            raw = out.view(np.uint8)
            written = cv2.convertScaleAbs(rgb, dst=raw, alpha=a.alpha, beta=a.beta)
            if a.flip:
                np.bitwise_xor(raw, 0x80, out=raw)
        else:
            written = cv2.LUT(rgb, self._table, dst=out)
        # OpenCV silently writes a new array when it cannot use dst; never let that pass.
        if written.ctypes.data != out.ctypes.data:
            raise RuntimeError("OpenCV did not write into the model input in place")
        return out

    def __call__(self, image: np.ndarray, out: np.ndarray) -> Fit:
        """Write the model input for a BGR uint8 frame into ``out``.

        Args:
            image: HxWx3 BGR uint8 frame (as OpenCV captures it).
            out: destination of the input's shape (with or without the batch axis) and
                dtype, e.g. the interpreter's input tensor view.

        Returns:
            The Fit that maps model-input coordinates back to the frame.

        Raises:
            ValueError: the frame is not a 3-channel uint8 image.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 frame, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        fit = self.plan(w, h)
        dst = out[0] if out.ndim == 4 else out
        if dst.shape != (self.height, self.width, 3) or dst.dtype != self.lut.table.dtype:
            raise ValueError(
                f"destination {dst.shape} {dst.dtype} does not match the model input "
                f"{(self.height, self.width, 3)} {self.lut.table.dtype}"
            )
        top, left = fit.pad_y, fit.pad_x
        roi = dst[top : top + fit.new_h, left : left + fit.new_w]
        src = image
        if (fit.new_w, fit.new_h) != (w, h):
            size = (fit.new_w, fit.new_h)
            resized = self._scratch(self._resized, fit)
            src = cv2.resize(image, size, dst=resized, interpolation=self._interp)
        if self.lut.identity:
            written = cv2.cvtColor(src, cv2.COLOR_BGR2RGB, dst=roi)
            # OpenCV silently writes a new array when it cannot use dst; never let that pass.
            if written.ctypes.data != roi.ctypes.data:
                raise RuntimeError("OpenCV did not write into the model input in place")
        else:
            self.quantize(
                cv2.cvtColor(src, cv2.COLOR_BGR2RGB, dst=self._scratch(self._rgb, fit)), roi
            )
        if roi.shape != dst.shape:  # letterbox: the pad is the quantized grey
            dst[:top] = self._pad
            dst[top + fit.new_h :] = self._pad
            dst[top : top + fit.new_h, :left] = self._pad
            dst[top : top + fit.new_h, left + fit.new_w :] = self._pad
        return fit
