"""Which pixel normalization a model gets, and why (the documented rule).

In order of precedence:

1. ``model.input_mean``/``input_std`` (``infer --mean/--std``): used as given.
2. The model's TFLite metadata ``NormalizationOptions``. On a quantized input whose
   quantization already makes the mapping an identity within one step (Coral's
   ``mean 127.5, std 127.5`` on ``scale 1/128, zero point 128``), raw pixels are fed:
   the tables differ only by the quantizer's rounding.
3. YOLO detectors: ``pixel / 255`` (Ultralytics' exporter feeds ``[0, 1]``).
4. Inputs with range evidence: a uint8 or int8 input's quantization, or for a float
   input the quantization of the ``QUANTIZE`` op right after it (the TFLite converter's
   default float-I/O export). The quantized range's real values
   ``[(qmin - zp) * s, (qmax - zp) * s]`` are what the model was calibrated on:

   a. If ``[0, 255]`` (mean 0, std 1), ``[-1, 1]`` (mean 128, std 128, pycoral's
      default) or ``[0, 1]`` (mean 0, std 255) makes the mapping an identity (pixels go
      in unchanged, less 128 on int8), that one.
   b. Otherwise the widest convention whose real range the quantized range covers
      (within one step) and that fills at least half of it. This is a guess and is
      reported as one.
   c. None: raw pixels spread over the quantized range, a guess.

5. Inputs without evidence (float fed to float operators) and without metadata:
   ``[0, 1]`` (full-integer exporters and Ultralytics divide by 255), a guess.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from edge_agent.inference.quantization import Normalization, build_lut, normalization
from edge_agent.inference.tensors import TensorSpec

RAW_PIXELS = normalization(0.0, 1.0)  # the real value is the pixel
MINUS_ONE_ONE = normalization(128.0, 128.0)  # pycoral's default
EDGETPU_MINUS_ONE_ONE = normalization(127.0, 128.0)  # Google's EdgeTPU model families
ZERO_ONE = normalization(0.0, 255.0)
# A guessed convention must fill at least this share of the input's real range:
# calibration widens a range a little (MobileNet-EdgeTPU's [-1.42, 1.53] for [-1, 1]
# fills 0.68 of it), while a range many times wider was calibrated on something else
# (raw pixels' [0, 255] covers [0, 1] too, with 0.4 % of its steps).
MIN_FILL = 0.5


class Convention(NamedTuple):
    """A known pixel convention: its identity form, its guessed form and real range."""

    name: str
    identity: Normalization
    guess: Normalization
    range: tuple[float, float]


# Conventions the rule chooses from, widest real range first.
CONVENTIONS = (
    Convention("[0, 255]", RAW_PIXELS, RAW_PIXELS, (0.0, 255.0)),
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


def _evidence(spec: TensorSpec, quantized_as: TensorSpec | None) -> TensorSpec | None:
    """The 8-bit quantized tensor whose range tells what the model was calibrated on:
    the input itself, or the tensor a float input is quantized into first."""

    def eight_bit(tensor: TensorSpec) -> bool:
        return tensor.dtype in (np.uint8, np.int8) and tensor.quant.scale > 0

    if eight_bit(spec):
        return spec
    if spec.dtype == np.float32 and quantized_as is not None and eight_bit(quantized_as):
        return quantized_as
    return None


def _limits(evidence: TensorSpec) -> tuple[int, int]:
    """The smallest and largest integer of the tensor's dtype."""
    info = np.iinfo(evidence.dtype)
    return int(info.min), int(info.max)


def _real_range(evidence: TensorSpec) -> tuple[float, float]:
    """The real values of the quantized tensor's smallest and largest integer."""
    s, zp = evidence.quant.scale, evidence.quant.zero_point
    qmin, qmax = _limits(evidence)
    return (qmin - zp) * s, (qmax - zp) * s


def _raw_pixels(evidence: TensorSpec) -> Normalization:
    """The normalization that puts pixel ``p`` into the tensor as ``qmin + p``."""
    zp, qmin = evidence.quant.zero_point, _limits(evidence)[0]
    return normalization(float(zp - qmin), 1.0 / evidence.quant.scale)


def _steps_from_raw(evidence: TensorSpec, norm: Normalization) -> int:
    """How many quantized steps ``norm``'s table is at most from raw pixels."""
    table = build_lut(evidence, norm).table.reshape(256, 3).astype(np.int16)
    raw = np.arange(256, dtype=np.int16)[:, None] + _limits(evidence)[0]
    return int(np.abs(table - raw).max())


def _text(norm: Normalization) -> str:
    """``mean 128, std 128`` (one number when the channels agree)."""

    def one(values: tuple[float, ...]) -> str:
        vals = values[:1] if len(set(values)) == 1 else values
        return "/".join(f"{v:g}" for v in vals)

    return f"mean {one(norm.mean)}, std {one(norm.std)}"


def _where(spec: TensorSpec, evidence: TensorSpec) -> str:
    """Which tensor the range came from, for the reason."""
    lo, hi = _real_range(evidence)
    if evidence is spec:
        return f"the input's quantized range [{lo:.2f}, {hi:.2f}]"
    return (
        f"the quantized range [{lo:.2f}, {hi:.2f}] its first op ({evidence.name!r}, "
        f"{np.dtype(evidence.dtype).name}) gives the float input"
    )


def _range_rule(spec: TensorSpec, evidence: TensorSpec) -> InputNormalization:
    """Rule 4 of the module docstring."""
    for conv in CONVENTIONS:
        if _steps_from_raw(evidence, conv.identity) == 0:
            return InputNormalization(
                conv.identity,
                NormSource.IDENTITY,
                f"{conv.name} ({_text(conv.identity)}) is the identity here "
                f"({_where(spec, evidence)})",
            )
    lo, hi = _real_range(evidence)
    step = evidence.quant.scale
    for conv in CONVENTIONS:
        low, high = conv.range
        # One quantized step of slack: calibration ranges are rounded to the grid.
        covered = lo <= low + step and hi >= high - step
        if covered and high - low >= MIN_FILL * (hi - lo):
            return InputNormalization(
                conv.guess,
                NormSource.GUESS,
                f"assumed {conv.name} ({_text(conv.guess)}): {_where(spec, evidence)} covers it",
            )
    raw = _raw_pixels(evidence)
    return InputNormalization(
        raw,
        NormSource.GUESS,
        f"assumed raw pixels ({_text(raw)}): {_where(spec, evidence)} fits none of "
        "[0, 255], [-1, 1], [0, 1]",
    )


def choose_normalization(
    spec: TensorSpec,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    metadata: tuple[Sequence[float], Sequence[float]] | None = None,
    yolo: bool = False,
    quantized_as: TensorSpec | None = None,
) -> InputNormalization:
    """Pick the input normalization by the rule of the module docstring.

    Args:
        spec: the model's input tensor.
        mean, std: the configured override (both or neither).
        metadata: ``(mean, std)`` from the model's TFLite metadata.
        yolo: the model is a YOLO detector (Ultralytics' convention).
        quantized_as: for a float input, the tensor the model's ``QUANTIZE`` op makes
            of it first (the file's ``ModelMetadata.input_quantized``).

    Returns:
        The InputNormalization; ``source`` GUESS means the caller should say so.

    Raises:
        ValueError: a mean/std with a wrong length or a non-positive std.
    """
    if mean is not None and std is not None:
        norm = normalization(mean, std)
        return InputNormalization(norm, NormSource.CONFIG, f"configured ({_text(norm)})")
    evidence = _evidence(spec, quantized_as)
    if metadata is not None:
        norm = normalization(*metadata)
        if evidence is not None and _steps_from_raw(evidence, norm) <= 1:
            return InputNormalization(
                _raw_pixels(evidence),
                NormSource.METADATA,
                f"model metadata ({_text(norm)}), an identity on this input within one step",
            )
        return InputNormalization(norm, NormSource.METADATA, f"model metadata ({_text(norm)})")
    if yolo:
        return InputNormalization(
            ZERO_ONE, NormSource.FAMILY, "YOLO: pixel / 255, as Ultralytics exports"
        )
    if evidence is not None:
        return _range_rule(spec, evidence)
    return InputNormalization(
        ZERO_ONE,
        NormSource.GUESS,
        f"assumed [0, 1] ({_text(ZERO_ONE)}) for a {np.dtype(spec.dtype).name} input "
        "without metadata or a quantized range",
    )
