"""Camera frame -> model input tensor, in place: resize/letterbox, BGR->RGB, LUT.

Every step writes into a preallocated buffer, and the last one (the quantization table)
writes straight into the destination, which is the interpreter's input tensor or a
shared-memory slot for the inference worker. No float image is ever made.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def input_geometry(spec: TensorSpec) -> tuple[int, int]:
    """(height, width) of an NHWC image input with 3 channels.

    Raises:
        ModelError: the input is not a [1, H, W, 3] (or [H, W, 3]) image tensor.
    """
    shape = spec.shape[1:] if len(spec.shape) == 4 else spec.shape
    if len(shape) != 3 or shape[2] != 3 or (len(spec.shape) == 4 and spec.shape[0] != 1):
        raise ModelError(f"input {spec.name!r} shape {list(spec.shape)} is not [1, H, W, 3]")
    return int(shape[0]), int(shape[1])


class Preprocessor:
    """Fits BGR frames into one model input and quantizes them with a lookup table.

    Args:
        spec: the model's input tensor.
        resize: "stretch" or "letterbox".
        mean, std: per-channel normalization override (None: derived from the model).
    """

    def __init__(
        self,
        spec: TensorSpec,
        *,
        resize: str = "stretch",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        if resize not in ("stretch", "letterbox"):
            raise ValueError(f"resize must be stretch or letterbox, got {resize!r}")
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
        # What the letterbox pad becomes after quantization, per channel.
        self._pad = table[0, PAD_VALUE].copy()
        self._resized: np.ndarray | None = None
        self._rgb: np.ndarray | None = None
        self._fit: Fit | None = None

    def plan(self, src_w: int, src_h: int) -> Fit:
        """The Fit for a source size (cached: cameras rarely change size)."""
        fit = self._fit
        if fit is None or fit.src_w != src_w or fit.src_h != src_h:
            fit = plan_fit(src_w, src_h, self.width, self.height, self.resize)
            self._fit = fit
            self._resized = np.empty((fit.new_h, fit.new_w, 3), dtype=np.uint8)
            self._rgb = np.empty((fit.new_h, fit.new_w, 3), dtype=np.uint8)
        return fit

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
            # INTER_AREA when shrinking (no aliasing), bilinear when enlarging.
            interp = cv2.INTER_AREA if fit.new_w < w or fit.new_h < h else cv2.INTER_LINEAR
            src = cv2.resize(image, (fit.new_w, fit.new_h), dst=self._resized, interpolation=interp)
        if self.lut.identity:
            written = cv2.cvtColor(src, cv2.COLOR_BGR2RGB, dst=roi)
        else:
            cv2.cvtColor(src, cv2.COLOR_BGR2RGB, dst=self._rgb)
            written = cv2.LUT(self._rgb, self._table, dst=roi)
        # OpenCV silently writes a new array when it cannot use dst; never let that pass.
        if written.ctypes.data != roi.ctypes.data:
            raise RuntimeError("OpenCV did not write into the model input in place")
        if roi.shape != dst.shape:  # letterbox: the pad is the quantized grey
            dst[:top] = self._pad
            dst[top + fit.new_h :] = self._pad
            dst[top : top + fit.new_h, :left] = self._pad
            dst[top : top + fit.new_h, left + fit.new_w :] = self._pad
        return fit
