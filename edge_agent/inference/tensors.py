"""Tensor descriptions shared by the runtime, quantization and the adapters.

These are plain NamedTuples so that the pure adapter functions can take them without
depending on any interpreter object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from edge_agent.errors import ModelError


class QuantParams(NamedTuple):
    """Per-tensor affine quantization: ``real = (q - zero_point) * scale``.

    ``scale == 0`` means the tensor is not quantized (float).
    """

    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        """True when the tensor holds integers that need (de)quantization."""
        return self.scale != 0.0


NOT_QUANTIZED = QuantParams(0.0, 0)


def per_tensor_quant(name: str, scales: Sequence[float], zero_points: Sequence[int]) -> QuantParams:
    """A model input's or output's quantization.

    Args:
        name: the tensor's name, for the message.
        scales, zero_points: its quantization parameters as the file or the
            interpreter lists them (empty when it is not quantized).

    Returns:
        Its QuantParams; ``NOT_QUANTIZED`` without scales.

    Raises:
        ModelError: the tensor is quantized per channel (several scales or zero points),
            which edge-agent does not (de)quantize.
    """
    if len(scales) > 1 or len(zero_points) > 1:
        raise ModelError(
            f"tensor {name!r} uses per-channel quantization ({len(scales)} scales); "
            "only per-tensor quantization is supported on model inputs/outputs"
        )
    if len(scales) == 0:
        return NOT_QUANTIZED
    return QuantParams(float(scales[0]), int(zero_points[0]) if len(zero_points) else 0)


class TensorSpec(NamedTuple):
    """What the runtime reports about one input or output tensor.

    ``signature`` is the tensor's ``shape_signature``: -1 marks a dimension the model
    leaves to run time (``shape`` then holds a placeholder, often 1); empty when unknown.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quant: QuantParams
    signature: tuple[int, ...] = ()


def dequantize(values: np.ndarray, quant: QuantParams) -> np.ndarray:
    """Return the real values of a tensor (a float32 copy; floats pass through).

    Args:
        values: the raw tensor (integer when ``quant.quantized``).
        quant: its quantization parameters.

    Returns:
        ``(values - zero_point) * scale`` as float32, or ``values`` as float32 when the
        tensor is not quantized.
    """
    if not quant.quantized:
        return np.asarray(values, dtype=np.float32)
    return (np.asarray(values, dtype=np.float32) - np.float32(quant.zero_point)) * np.float32(
        quant.scale
    )


def quantize_threshold(threshold: float, quant: QuantParams, dtype: np.dtype) -> int:
    """Map a real-valued threshold into the integer domain of a quantized tensor.

    ``q >= quantize_threshold(t, quant, dtype)`` selects exactly the elements for which
    ``dequantize(q, quant) >= np.float32(t)`` holds (float32 arithmetic, as
    :func:`dequantize` computes it), so a threshold can be applied to the raw integer
    tensor and only the survivors need dequantizing.

    Args:
        threshold: the real threshold (``-inf``/``inf`` select everything/nothing).
        quant: the tensor's quantization (must be quantized, i.e. a positive scale).
        dtype: the tensor's integer dtype.

    Returns:
        The smallest integer ``q`` in ``[dtype.min, dtype.max + 1]`` whose dequantized
        value is ``>= threshold``: ``dtype.min`` means every value passes,
        ``dtype.max + 1`` (outside the dtype, so compare in a wider type or special-case
        it) means none does.

    Raises:
        ValueError: the threshold is NaN, the tensor is not quantized, or the dtype is
            not an integer type.
    """
    if np.isnan(threshold):
        raise ValueError("threshold is NaN")
    if not quant.scale > 0:
        raise ValueError(f"tensor is not quantized with a positive scale ({quant})")
    info = np.iinfo(dtype)  # raises ValueError for float dtypes
    target = np.float32(threshold)
    scale = np.float32(quant.scale)
    zero_point = np.float32(quant.zero_point)
    if not scale > 0:  # a scale below float32's range would divide by zero below
        raise ValueError(f"quantization scale {quant.scale} underflows float32")

    def real(q: int) -> np.float32:
        """The value dequantize() gives for q, with the same float32 operations."""
        return (np.float32(q) - zero_point) * scale

    if not np.isfinite(target):
        return int(info.min) if target < 0 else int(info.max) + 1
    # The float64 estimate is within one or two steps of the answer; float32 rounding of
    # the product decides the exact boundary, so walk to it with the real formula
    # (real() is monotone in q because scale > 0).
    estimate = np.ceil(float(target) / float(scale) + quant.zero_point)
    q = int(min(max(estimate, info.min), info.max + 1))
    while q > info.min and real(q - 1) >= target:
        q -= 1
    while q <= info.max and real(q) < target:
        q += 1
    return q
