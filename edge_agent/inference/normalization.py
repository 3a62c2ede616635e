"""Which pixel normalization a model gets, and why (the documented rule).

In order of precedence:

1. ``model.input_mean``/``input_std`` (``infer --mean/--std``): used as given.
2. The model's TFLite metadata ``NormalizationOptions``. On a quantized input whose
   quantization already makes the mapping an identity within one step (Coral's
   ``mean 127.5, std 127.5`` on ``scale 1/128, zero point 128``), raw pixels are fed:
   the tables differ only by the quantizer's rounding.
3. YOLO detectors: ``pixel / 255`` (Ultralytics' exporter feeds ``[0, 1]``).
4. uint8 inputs: if ``[-1, 1]`` (mean 128, std 128, pycoral's default) or ``[0, 1]``
   (mean 0, std 255) makes the input mapping an identity, that one (raw pixels go in).
   Otherwise the convention whose real range the input's quantized range
   ``[(0 - zp) * s, (255 - zp) * s]`` covers, the wider first; if none is covered, raw
   pixels. This is a guess and is reported as one.
5. int8 and float inputs without metadata: ``[0, 1]`` (full-integer exporters and
   Ultralytics divide by 255), a guess.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from edge_agent.inference.quantization import Normalization, build_lut, normalization
from edge_agent.inference.tensors import TensorSpec

MINUS_ONE_ONE = normalization(128.0, 128.0)  # pycoral's default
EDGETPU_MINUS_ONE_ONE = normalization(127.0, 128.0)  # Google's EdgeTPU model families
ZERO_ONE = normalization(0.0, 255.0)


class Convention(NamedTuple):
    """A known pixel convention: its identity form, its guessed form and real range."""

    name: str
    identity: Normalization
    guess: Normalization
    range: tuple[float, float]


# Conventions the rule chooses from, widest real range first.
CONVENTIONS = (
    Convention("[-1, 1]", MINUS_ONE_ONE, EDGETPU_MINUS_ONE_ONE, (-1.0, 1.0)),
    Convention("[0, 1]", ZERO_ONE, ZERO_ONE, (0.0, 1.0)),
)


class NormSource(enum.Enum):
    """Where a model's input normalization came from."""

    CONFIG = "config"
    METADATA = "metadata"
    FAMILY = "family"
    IDENTITY = "identity"
    GUESS = "guess"


class InputNormalization(NamedTuple):
    """The chosen normalization, its source and a one-line explanation."""

    norm: Normalization
    source: NormSource
    reason: str

    def to_json(self) -> dict[str, object]:
        """What ``infer``, check-config and doctor report."""
        return {
            "mean": list(self.norm.mean),
            "std": list(self.norm.std),
            "source": self.source.value,
            "reason": self.reason,
        }


def _raw_pixels(spec: TensorSpec) -> Normalization:
    """The normalization that feeds a uint8 input its pixels unchanged."""
    return normalization(float(spec.quant.zero_point), 1.0 / spec.quant.scale)


def _is_identity(spec: TensorSpec, norm: Normalization) -> bool:
    """True when the quantization table of ``norm`` leaves uint8 pixels unchanged."""
    return build_lut(spec, norm).identity


def _near_identity(spec: TensorSpec, norm: Normalization) -> bool:
    """True when ``norm``'s table is within one quantized step of raw pixels."""
    table = build_lut(spec, norm).table.reshape(256, 3).astype(np.int16)
    return bool(np.abs(table - np.arange(256, dtype=np.int16)[:, None]).max() <= 1)


def _text(norm: Normalization) -> str:
    """``mean 128, std 128`` (one number when the channels agree)."""

    def one(values: tuple[float, ...]) -> str:
        vals = values[:1] if len(set(values)) == 1 else values
        return "/".join(f"{v:g}" for v in vals)

    return f"mean {one(norm.mean)}, std {one(norm.std)}"


def _uint8_rule(spec: TensorSpec) -> InputNormalization:
    """Rule 4 of the module docstring."""
    for conv in CONVENTIONS:
        if _is_identity(spec, conv.identity):
            return InputNormalization(
                conv.identity,
                NormSource.IDENTITY,
                f"{conv.name} ({_text(conv.identity)}) is the identity here",
            )
    s, zp = spec.quant.scale, spec.quant.zero_point
    lo, hi = (0 - zp) * s, (255 - zp) * s
    for conv in CONVENTIONS:
        # One quantized step of slack: calibration ranges are rounded to the grid.
        if lo <= conv.range[0] + s and hi >= conv.range[1] - s:
            return InputNormalization(
                conv.guess,
                NormSource.GUESS,
                f"assumed {conv.name} ({_text(conv.guess)}): the input's quantized range "
                f"[{lo:.2f}, {hi:.2f}] covers it",
            )
    return InputNormalization(
        _raw_pixels(spec),
        NormSource.GUESS,
        f"assumed raw pixels: the input's quantized range [{lo:.2f}, {hi:.2f}] covers "
        "neither [-1, 1] nor [0, 1]",
    )


def choose_normalization(
    spec: TensorSpec,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    metadata: tuple[Sequence[float], Sequence[float]] | None = None,
    yolo: bool = False,
) -> InputNormalization:
    """Pick the input normalization by the rule of the module docstring.

    Args:
        spec: the model's input tensor.
        mean, std: the configured override (both or neither).
        metadata: ``(mean, std)`` from the model's TFLite metadata.
        yolo: the model is a YOLO detector (Ultralytics' convention).

    Returns:
        The InputNormalization; ``source`` GUESS means the caller should say so.

    Raises:
        ValueError: a mean/std with a wrong length or a non-positive std.
    """
    if mean is not None and std is not None:
        norm = normalization(mean, std)
        return InputNormalization(norm, NormSource.CONFIG, f"configured ({_text(norm)})")
    quantized_u8 = spec.dtype == np.uint8 and spec.quant.quantized
    if metadata is not None:
        norm = normalization(*metadata)
        if quantized_u8 and _near_identity(spec, norm):
            return InputNormalization(
                _raw_pixels(spec),
                NormSource.METADATA,
                f"model metadata ({_text(norm)}), an identity on this input within one step",
            )
        return InputNormalization(norm, NormSource.METADATA, f"model metadata ({_text(norm)})")
    if yolo:
        return InputNormalization(
            ZERO_ONE, NormSource.FAMILY, "YOLO: pixel / 255, as Ultralytics exports"
        )
    if quantized_u8:
        return _uint8_rule(spec)
    return InputNormalization(
        ZERO_ONE,
        NormSource.GUESS,
        f"assumed [0, 1] ({_text(ZERO_ONE)}) for a {np.dtype(spec.dtype).name} input "
        "without metadata",
    )
