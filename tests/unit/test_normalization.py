"""Tier 1: the documented input-normalization rule (edge_agent/inference/normalization.py)."""

import numpy as np
import pytest

from edge_agent.inference.normalization import (
    EDGETPU_MINUS_ONE_ONE,
    MINUS_ONE_ONE,
    RAW_PIXELS,
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


def test_raw_pixel_range_is_not_mistaken_for_a_narrow_convention():
    # Scale 1, zero point 0: real range [0, 255], the pixels themselves. One step of
    # slack (1.0) used to let that "cover" [-1, 1], which crushed every pixel to 0 or 1.
    raw = spec(np.uint8, 1.0, 0)
    chosen = choose_normalization(raw)
    assert (chosen.norm, chosen.source) == (RAW_PIXELS, NormSource.IDENTITY)
    assert build_lut(raw, chosen.norm).identity and "[0, 255]" in chosen.reason
    # A calibrated raw-pixel range, a little wider than [0, 255]: guessed as such.
    chosen = choose_normalization(spec(np.uint8, 1.02, 1))
    assert (chosen.norm, chosen.source) == (RAW_PIXELS, NormSource.GUESS)
    # [0, 200] covers [0, 1] but with 0.5 % of its steps: neither, raw pixels.
    wide = spec(np.uint8, 200 / 255, 0)
    chosen = choose_normalization(wide)
    assert chosen.source is NormSource.GUESS and "raw pixels" in chosen.reason
    assert build_lut(wide, chosen.norm).identity


def _int8_table(input_spec, norm):
    return build_lut(input_spec, norm).table.reshape(256, 3)[:, 0].astype(np.int16)


def test_int8_inputs_follow_their_range_like_uint8():
    # mobilenet_v2 re-exported with an int8 input: [-1, 0.99] is [-1, 1], pixel - 128.
    int8_minus_one_one = spec(np.int8, 1 / 128, 0)
    chosen = choose_normalization(int8_minus_one_one)
    assert (chosen.norm, chosen.source) == (MINUS_ONE_ONE, NormSource.IDENTITY)
    assert np.array_equal(_int8_table(int8_minus_one_one, chosen.norm), np.arange(256) - 128)
    # The usual full-integer [0, 1] calibration: scale 1/255, zero point -128.
    chosen = choose_normalization(spec(np.int8, 1 / 255, -128))
    assert (chosen.norm, chosen.source) == (ZERO_ONE, NormSource.IDENTITY)
    # MobileNet-EdgeTPU's range on an int8 input: the same guess as on uint8.
    edgetpu_int8 = spec(np.int8, EDGETPU.quant.scale, EDGETPU.quant.zero_point - 128)
    chosen = choose_normalization(edgetpu_int8)
    assert (chosen.norm, chosen.source) == (EDGETPU_MINUS_ONE_ONE, NormSource.GUESS)
    assert "[-1.42, 1.53]" in chosen.reason
    # YOLOv8n's input range [-2.13, 2.63] fits no convention; its family rule says [0, 1].
    chosen = choose_normalization(YOLO_IN)
    assert chosen.source is NormSource.GUESS and "raw pixels" in chosen.reason
    assert np.array_equal(_int8_table(YOLO_IN, chosen.norm), np.arange(256) - 128)


def test_float_inputs_follow_the_range_of_their_first_quantize_op():
    quantized = spec(np.uint8, 1 / 128, 128)._replace(name="input_uint8")
    chosen = choose_normalization(spec(np.float32), quantized_as=quantized)
    assert (chosen.norm, chosen.source) == (MINUS_ONE_ONE, NormSource.IDENTITY)
    assert "'input_uint8'" in chosen.reason and "float input" in chosen.reason
    chosen = choose_normalization(spec(np.float32), quantized_as=EDGETPU)
    assert (chosen.norm, chosen.source) == (EDGETPU_MINUS_ONE_ONE, NormSource.GUESS)
    # Raw pixels on a float input: (p - mean) / std, quantized by the op, is qmin + p.
    chosen = choose_normalization(spec(np.float32), quantized_as=YOLO_IN)
    s, zp = YOLO_IN.quant
    x = (np.arange(256) - chosen.norm.mean[0]) / chosen.norm.std[0]
    assert np.array_equal(np.round(x / s + zp), np.arange(256) - 128)
    # Metadata within one step of the quantized identity: raw pixels, as on uint8.
    chosen = choose_normalization(
        spec(np.float32), metadata=((127.5,), (127.5,)), quantized_as=quantized
    )
    assert (chosen.norm, chosen.source) == (MINUS_ONE_ONE, NormSource.METADATA)


@pytest.mark.parametrize(
    "quantized_as",
    [None, spec(np.int16, 1 / 32768, 0), spec(np.int8)],
    ids=["float ops only", "int16 quantize", "int8 unquantized"],
)
def test_float_input_without_range_evidence_guesses_zero_one(quantized_as):
    chosen = choose_normalization(spec(np.float32), quantized_as=quantized_as)
    assert (chosen.norm, chosen.source) == (ZERO_ONE, NormSource.GUESS)
    assert chosen.to_json()["source"] == "guess"
