"""Tier 1: the input lookup table is bit-exact with the quantization formula."""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import ModelError
from edge_agent.inference.quantization import (
    build_lut,
    default_normalization,
    normalization,
    quantize_formula,
)
from edge_agent.inference.tensors import NOT_QUANTIZED, QuantParams, TensorSpec


def spec(dtype, scale=0.0, zp=0, shape=(1, 8, 8, 3)):
    return TensorSpec(0, "input", shape, np.dtype(dtype), QuantParams(scale, zp))


@settings(max_examples=300, deadline=None)
@given(
    dtype=st.sampled_from([np.uint8, np.int8]),
    scale=st.floats(1e-4, 2.0, allow_nan=False),
    zp=st.integers(-128, 255),
    mean=st.lists(st.floats(-300, 300, allow_nan=False), min_size=3, max_size=3),
    std=st.lists(st.floats(0.01, 300, allow_nan=False), min_size=3, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_lut_equals_formula_on_random_images(dtype, scale, zp, mean, std, seed):
    info = np.iinfo(dtype)
    zp = int(np.clip(zp, info.min, info.max))
    s = spec(dtype, scale, zp)
    norm = normalization(mean, std)
    image = np.random.default_rng(seed).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    lut = build_lut(s, norm)
    assert lut.table.dtype == dtype
    got = cv2.LUT(image, lut.table)
    want = quantize_formula(image, norm, scale, zp, np.dtype(dtype))
    np.testing.assert_array_equal(got, want)


def test_seed_formula_is_matched_bit_exactly_for_yolov8n_input():
    # yolov8n_full_integer_quant: int8, scale 0.018658, zp -14, pixels / 255.
    s = spec(np.int8, 0.01865844801068306, -14)
    image = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    seed = np.clip(np.round(image / 255.0 / s.quant.scale + s.quant.zero_point), -128, 127)
    lut = build_lut(s, default_normalization(s))
    assert not lut.identity
    np.testing.assert_array_equal(cv2.LUT(image, lut.table), seed.astype(np.int8))


def test_coral_uint8_default_is_identity():
    # mobilenet_v2_1.0_224_quant: uint8 scale 1/128 zp 128 takes raw pixels.
    lut = build_lut(
        spec(np.uint8, 0.0078125, 128), default_normalization(spec(np.uint8, 0.0078125, 128))
    )
    assert lut.identity
    np.testing.assert_array_equal(lut.table[0, :, 0], np.arange(256))


def test_non_identity_uint8_is_detected():
    s = spec(np.uint8, 1 / 255, 0)
    lut = build_lut(s, normalization(127.5, 127.5))
    assert not lut.identity
    # x = (p - 127.5)/127.5 in [-1, 1] -> q = x*255 clamped to [0, 255]
    assert lut.table[0, 0, 0] == 0 and lut.table[0, 255, 0] == 255 and lut.table[0, 128, 0] == 1


def test_float_input_table_is_normalized_pixels():
    s = spec(np.float32)
    lut = build_lut(s, default_normalization(s))
    assert lut.table.dtype == np.float32
    np.testing.assert_allclose(lut.table[0, :, 1], np.arange(256) / 255.0, rtol=1e-7)


def test_per_channel_mean_std_apply_per_channel():
    s = spec(np.uint8, 1.0, 0)
    lut = build_lut(s, normalization([0, 10, 20], [1, 2, 4]))
    assert list(lut.table[0, 100]) == [100, 45, 20]


def test_quantized_dtype_without_parameters_is_refused():
    with pytest.raises(ModelError, match="no quantization parameters"):
        build_lut(
            TensorSpec(0, "x", (1, 4, 4, 3), np.dtype(np.int8), NOT_QUANTIZED), normalization(0, 1)
        )


def test_bad_normalization_is_refused():
    with pytest.raises(ValueError):
        normalization([1, 2], 1)
    with pytest.raises(ValueError):
        normalization(0, 0)
