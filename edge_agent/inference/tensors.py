"""Tensor descriptions shared by the runtime, quantization and the adapters.

These are plain NamedTuples so that the pure adapter functions can take them without
depending on any interpreter object.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


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


class TensorSpec(NamedTuple):
    """What the runtime reports about one input or output tensor."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quant: QuantParams


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


def quantize_threshold(threshold: float, quant: QuantParams, dtype: np.dtype) -> float:
    """Map a real-valued threshold into the integer domain of a quantized tensor.

    Comparing ``q >= quantize_threshold(t)`` selects exactly the elements whose
    dequantized value is ``>= t``, so only the survivors need dequantizing.

    Args:
        threshold: the real threshold.
        quant: the tensor's quantization (must be quantized with a positive scale).
        dtype: the tensor's integer dtype.

    Returns:
        The smallest integer ``q`` (as float, possibly beyond the dtype range) such that
        ``(q - zp) * scale >= threshold``.
    """
    # ceil instead of round: (q - zp) * scale >= t  <=>  q >= t / scale + zp.
    q = np.ceil(threshold / quant.scale + quant.zero_point - 1e-9)
    info = np.iinfo(dtype)
    return float(min(max(q, info.min - 1), info.max + 1))
