"""Input quantization as a 256-entry lookup table.

The seed formula ``q = clamp(round(x / scale + zero_point))`` with the normalized pixel
``x = (p - mean) / std`` depends only on the 8-bit pixel value ``p`` (per channel), so it
is evaluated once for all 256 values and applied with ``cv2.LUT``: bit-exact with the
formula evaluated per pixel in float64, and no float image is ever materialized.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from edge_agent.errors import ModelError
from edge_agent.inference.tensors import TensorSpec

_PIXELS = np.arange(256, dtype=np.float64)


class Normalization(NamedTuple):
    """Per-channel ``x = (pixel - mean) / std`` applied before quantization (RGB order)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _triple(values: float | Sequence[float], what: str) -> tuple[float, float, float]:
    """Broadcast a scalar or 1/3-element sequence to three channels."""
    seq = [values] if isinstance(values, (int, float)) else list(values)
    if len(seq) == 1:
        seq = seq * 3
    if len(seq) != 3:
        raise ValueError(f"{what} needs 1 or 3 values, got {len(seq)}")
    return (float(seq[0]), float(seq[1]), float(seq[2]))


def normalization(mean: float | Sequence[float], std: float | Sequence[float]) -> Normalization:
    """Build a Normalization from scalars or per-channel sequences.

    Raises:
        ValueError: wrong lengths or a non-positive std.
    """
    norm = Normalization(_triple(mean, "mean"), _triple(std, "std"))
    if min(norm.std) <= 0:
        raise ValueError("std must be > 0")
    return norm


def default_normalization(spec: TensorSpec) -> Normalization:
    """The normalization a model most likely expects, read from its input tensor.

    * uint8 quantized inputs take raw pixels (the Coral convention: ``mean = zero_point``,
      ``std = 1 / scale`` makes the table an identity for Coral's models).
    * int8 and float inputs take ``pixel / 255`` (the Ultralytics/YOLO convention).

    Args:
        spec: the model's input tensor.

    Returns:
        The default Normalization; override it in the config when a model differs.
    """
    if spec.quant.quantized and spec.dtype == np.uint8:
        return normalization(float(spec.quant.zero_point), 1.0 / spec.quant.scale)
    return normalization(0.0, 255.0)


def quantize_formula(
    pixels: np.ndarray, norm: Normalization, scale: float, zero_point: int, dtype: np.dtype
) -> np.ndarray:
    """The reference formula, per pixel in float64: ``clamp(round(((p-mean)/std)/scale + zp))``.

    Args:
        pixels: uint8 array whose last axis is the 3 channels (or a 1-D value sweep
            broadcast against the channel parameters).
        norm: per-channel normalization.
        scale, zero_point: the input tensor's quantization.
        dtype: uint8 or int8.

    Returns:
        The quantized array in ``dtype``.
    """
    info = np.iinfo(dtype)
    mean = np.asarray(norm.mean, dtype=np.float64)
    std = np.asarray(norm.std, dtype=np.float64)
    x = (pixels.astype(np.float64) - mean) / std
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


class InputLUT(NamedTuple):
    """A ready table for ``cv2.LUT``: shape (1, 256, 3), dtype of the input tensor.

    ``identity`` is True when applying it would not change a uint8 image, so the
    preprocessor skips it.
    """

    table: np.ndarray
    identity: bool


def build_lut(spec: TensorSpec, norm: Normalization) -> InputLUT:
    """Build the lookup table that turns an RGB uint8 image into the model's input.

    Args:
        spec: the model's input tensor (uint8, int8 or float32).
        norm: per-channel normalization of the pixels.

    Returns:
        The InputLUT.

    Raises:
        ModelError: unsupported input dtype, or a quantized input without a positive scale.
    """
    dtype = spec.dtype
    sweep = np.repeat(_PIXELS[:, None], 3, axis=1)  # (256, 3): every pixel value per channel
    if dtype in (np.uint8, np.int8):
        if not spec.quant.quantized or spec.quant.scale <= 0:
            raise ModelError(f"input {spec.name!r} is {dtype} but has no quantization parameters")
        table = quantize_formula(sweep, norm, spec.quant.scale, spec.quant.zero_point, dtype)
    elif dtype == np.float32:
        mean = np.asarray(norm.mean, dtype=np.float64)
        std = np.asarray(norm.std, dtype=np.float64)
        table = ((sweep - mean) / std).astype(np.float32)
    else:
        raise ModelError(f"input {spec.name!r} has unsupported dtype {dtype}")
    identity = dtype == np.uint8 and bool(np.all(table == sweep.astype(np.uint8)))
    return InputLUT(np.ascontiguousarray(table.reshape(1, 256, 3)), identity)
