"""Tier 1: the documented input-normalization rule (edge_agent/inference/normalization.py)."""

import numpy as np
import pytest

from edge_agent.inference.normalization import (
    EDGETPU_MINUS_ONE_ONE,
    MINUS_ONE_ONE,
    ZERO_ONE,
    NormSource,
    choose_normalization,
)
from edge_agent.inference.quantization import build_lut
from edge_agent.inference.tensors import NOT_QUANTIZED, QuantParams, TensorSpec


def spec(dtype, scale=0.0, zero_point=0):
    quant = QuantParams(scale, zero_point) if scale else NOT_QUANTIZED
    return TensorSpec(0, "input", (1, 224, 224, 3), np.dtype(dtype), quant)


CORAL = spec(np.uint8, 1 / 128, 128)  # mobilenet_v2_1.0_224_quant
EDGETPU = spec(np.uint8, 0.011570743285119534, 123)  # mobilenet_edgetpu_0.75_224
YOLO_IN = spec(np.int8, 0.01865844801068306, -14)  # yolov8n_full_integer_quant
ZERO_ONE_U8 = spec(np.uint8, 1 / 255, 0)


def test_identity_conventions_are_not_guesses():
    chosen = choose_normalization(CORAL)
    assert (chosen.norm, chosen.source) == (MINUS_ONE_ONE, NormSource.IDENTITY)
    assert build_lut(CORAL, chosen.norm).identity
    chosen = choose_normalization(ZERO_ONE_U8)
    assert (chosen.norm, chosen.source) == (ZERO_ONE, NormSource.IDENTITY)


def test_range_rule_picks_minus_one_one_for_mobilenet_edgetpu():
    chosen = choose_normalization(EDGETPU)
    assert chosen.source is NormSource.GUESS
    assert chosen.norm == EDGETPU_MINUS_ONE_ONE
    assert "[-1.42, 1.53]" in chosen.reason and "[-1, 1]" in chosen.reason
    # Google's test table: effective scale 1.4810551, effective mean -55.169782.
    lut = build_lut(EDGETPU, chosen.norm).table.reshape(256, 3)[:, 0].astype(np.float64)
    google = np.clip(np.round((np.arange(256) + 55.169782) / 1.4810551), 0, 255)
    assert np.array_equal(lut, google)


def test_range_rule_zero_one_and_raw_fallback():
    # [0.1, 2.65]: covers [0, 1] (within one step? no) -> neither: raw pixels.
    narrow = spec(np.uint8, 0.01, -10)
    chosen = choose_normalization(narrow)
    assert chosen.source is NormSource.GUESS and "raw pixels" in chosen.reason
    assert build_lut(narrow, chosen.norm).identity
    # [-0.02, 1.2]: covers [0, 1] only.
    chosen = choose_normalization(spec(np.uint8, 1.22 / 255, 4))
    assert (chosen.norm, chosen.source) == (ZERO_ONE, NormSource.GUESS)


def test_precedence_config_metadata_family():
    chosen = choose_normalization(EDGETPU, mean=[1, 2, 3], std=[4], metadata=((0,), (1,)))
    assert chosen.source is NormSource.CONFIG
    assert chosen.norm.mean == (1.0, 2.0, 3.0) and chosen.norm.std == (4.0, 4.0, 4.0)
    chosen = choose_normalization(EDGETPU, metadata=((0.0,), (255.0,)), yolo=True)
    assert (chosen.norm, chosen.source) == (ZERO_ONE, NormSource.METADATA)
    chosen = choose_normalization(YOLO_IN, yolo=True)
    assert (chosen.norm, chosen.source) == (ZERO_ONE, NormSource.FAMILY)


def test_metadata_within_one_step_of_identity_feeds_raw_pixels():
    # Coral's classifiers declare mean/std 127.5 on a 1/128, 128 input.
    chosen = choose_normalization(CORAL, metadata=((127.5,), (127.5,)))
    assert chosen.source is NormSource.METADATA
    assert build_lut(CORAL, chosen.norm).identity
    # A float input takes the metadata exactly.
    chosen = choose_normalization(spec(np.float32), metadata=((127.5,), (127.5,)))
    assert chosen.norm.mean == (127.5,) * 3 and chosen.source is NormSource.METADATA


@pytest.mark.parametrize("input_spec", [spec(np.float32), YOLO_IN])
def test_float_and_int8_without_metadata_guess_zero_one(input_spec):
    chosen = choose_normalization(input_spec)
    assert (chosen.norm, chosen.source) == (ZERO_ONE, NormSource.GUESS)
    assert chosen.to_json()["source"] == "guess"
