"""Result types shared by every adapter, and thresholding in a tensor's own domain.

Everything here is pure: numpy arrays in, NamedTuples out; no I/O and no logging.
Coordinates are floats in pixels of whatever space the producer says (the adapters
return input-tensor pixels; :mod:`edge_agent.inference.geometry` maps them back to the
camera frame).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge_agent.inference.tensors import QuantParams, dequantize, quantize_threshold

# The task names a model is run as (config values, MQTT payloads and model manifests
# use these exact strings).
CLASSIFICATION = "classification"
DETECTION_SSD = "detection-ssd"
DETECTION_YOLO = "detection-yolo"
TASKS = (CLASSIFICATION, DETECTION_SSD, DETECTION_YOLO)


class Class(NamedTuple):
    """One classification result: class index and its (dequantized) score."""

    id: int
    score: float


class BBox(NamedTuple):
    """An axis-aligned box with edges ``xmin <= x <= xmax``, ``ymin <= y <= ymax``.

    Coordinates are continuous (a box covering pixel columns 0..9 is ``xmin=0, xmax=10``).
    """

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def width(self) -> float:
        """``xmax - xmin`` (negative for an inverted box)."""
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        """``ymax - ymin`` (negative for an inverted box)."""
        return self.ymax - self.ymin

    @property
    def area(self) -> float:
        """The covered area; 0 for empty or inverted boxes."""
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def valid(self) -> bool:
        """True when the box covers a positive area."""
        return self.width > 0 and self.height > 0

    def intersect(self, other: BBox) -> BBox:
        """The overlap of two boxes (inverted, i.e. not ``valid``, when they are disjoint)."""
        return BBox(
            max(self.xmin, other.xmin),
            max(self.ymin, other.ymin),
            min(self.xmax, other.xmax),
            min(self.ymax, other.ymax),
        )

    def iou(self, other: BBox) -> float:
        """Intersection over union in ``[0, 1]``; 0 when the union is empty."""
        inter = self.intersect(other).area
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def scale(self, sx: float, sy: float) -> BBox:
        """The box with x coordinates multiplied by ``sx`` and y coordinates by ``sy``."""
        return BBox(self.xmin * sx, self.ymin * sy, self.xmax * sx, self.ymax * sy)

    def translate(self, dx: float, dy: float) -> BBox:
        """The box moved by ``(dx, dy)``."""
        return BBox(self.xmin + dx, self.ymin + dy, self.xmax + dx, self.ymax + dy)

    def clip(self, width: float, height: float) -> BBox:
        """The box clipped to ``[0, width] x [0, height]``."""
        return BBox(
            min(max(self.xmin, 0.0), width),
            min(max(self.ymin, 0.0), height),
            min(max(self.xmax, 0.0), width),
            min(max(self.ymax, 0.0), height),
        )


class Object(NamedTuple):
    """One detection: class index, score and box."""

    id: int
    score: float
    bbox: BBox


def threshold_mask(raw: np.ndarray, quant: QuantParams, threshold: float) -> np.ndarray:
    """Which elements of a raw output tensor have a real value ``>= threshold``.

    For an integer tensor with quantization the comparison happens on the integers
    (one ``quantize_threshold`` call, no dequantized copy of the tensor); the result is
    exactly ``dequantize(raw, quant) >= np.float32(threshold)``. Float tensors are
    compared as they are; their non-finite values are never selected.

    Args:
        raw: the tensor as the interpreter returned it.
        quant: its quantization parameters.
        threshold: the real-valued threshold.

    Returns:
        A boolean array of ``raw``'s shape.

    Raises:
        ValueError: the threshold is NaN.
    """
    if np.isnan(threshold):
        raise ValueError("threshold is NaN")
    if quant.quantized and np.issubdtype(raw.dtype, np.integer):
        q = quantize_threshold(threshold, quant, raw.dtype)
        info = np.iinfo(raw.dtype)
        # Out-of-range thresholds are decided without comparing: numpy 2 refuses to
        # compare an int8 array with a Python int that int8 cannot hold.
        if q <= info.min:
            return np.ones(raw.shape, dtype=bool)
        if q > info.max:
            return np.zeros(raw.shape, dtype=bool)
        return raw >= raw.dtype.type(q)
    values = dequantize(raw, quant)
    # An overflowed float output (inf) is no score: it would pass any threshold and be
    # published as the non-JSON token Infinity. NaN already fails the comparison.
    return (values >= np.float32(threshold)) & np.isfinite(values)
