"""Tier 1: result types and integer-domain thresholding (quantize_threshold)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.inference.adapters.common import BBox, Object, threshold_mask
from edge_agent.inference.tensors import NOT_QUANTIZED, QuantParams, dequantize, quantize_threshold

# --- BBox -------------------------------------------------------------------------------


def test_bbox_measures():
    box = BBox(10.0, 20.0, 40.0, 30.0)
    assert (box.width, box.height, box.area) == (30.0, 10.0, 300.0)
    assert box.valid
    inverted = BBox(5.0, 5.0, 1.0, 9.0)
    assert inverted.width == -4.0
    assert inverted.area == 0.0
    assert not inverted.valid


def test_bbox_iou_exact_values():
    a = BBox(0, 0, 10, 10)
    assert a.iou(a) == 1.0
    assert a.iou(BBox(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert a.iou(BBox(0, 0, 5, 5)) == 25 / 100
    assert a.iou(BBox(10, 0, 20, 10)) == 0.0  # touching edges share no area
    assert a.iou(BBox(30, 30, 40, 40)) == 0.0
    assert BBox(1, 1, 1, 1).iou(BBox(1, 1, 1, 1)) == 0.0  # empty union


def test_bbox_scale_translate_clip():
    box = BBox(1.0, 2.0, 3.0, 4.0)
    assert box.scale(2.0, 10.0) == BBox(2.0, 20.0, 6.0, 40.0)
    assert box.translate(-1.0, 0.5) == BBox(0.0, 2.5, 2.0, 4.5)
    assert BBox(-5.0, -1.0, 50.0, 8.0).clip(40, 6) == BBox(0.0, 0.0, 40.0, 6.0)
    assert BBox(50.0, 2.0, 60.0, 3.0).clip(40, 6) == BBox(40.0, 2.0, 40.0, 3.0)


def test_object_is_a_plain_tuple():
    obj = Object(3, 0.5, BBox(0, 0, 1, 1))
    assert obj == (3, 0.5, (0, 0, 1, 1))
    assert obj._replace(id=4).id == 4


# --- quantize_threshold -------------------------------------------------------------------


def test_quantize_threshold_exact_boundaries():
    q = QuantParams(1 / 256, 0)
    # 0.5 is exactly 128/256: included; a hair above needs 129.
    assert quantize_threshold(0.5, q, np.uint8) == 128
    assert quantize_threshold(0.5000001, q, np.uint8) == 129
    # zp -128, int8: real = (q + 128) / 256.
    assert quantize_threshold(0.25, QuantParams(1 / 256, -128), np.int8) == -64


def test_quantize_threshold_out_of_range():
    q = QuantParams(0.1, 0)
    assert quantize_threshold(-100.0, q, np.uint8) == 0  # everything passes
    assert quantize_threshold(100.0, q, np.uint8) == 256  # nothing passes
    assert quantize_threshold(-math.inf, q, np.int8) == -128
    assert quantize_threshold(math.inf, q, np.int8) == 128


def test_quantize_threshold_rejects_bad_arguments():
    with pytest.raises(ValueError, match="NaN"):
        quantize_threshold(math.nan, QuantParams(0.1, 0), np.uint8)
    with pytest.raises(ValueError, match="not quantized"):
        quantize_threshold(0.5, NOT_QUANTIZED, np.uint8)
    with pytest.raises(ValueError):
        quantize_threshold(0.5, QuantParams(0.1, 0), np.float32)


_DTYPES = st.sampled_from([np.int8, np.uint8, np.int16])


@st.composite
def quantized_tensor(draw):
    """A dtype, its quantization, every representable value, and a threshold."""
    dtype = draw(_DTYPES)
    info = np.iinfo(dtype)
    scale = draw(st.floats(1e-6, 10.0, allow_nan=False, allow_infinity=False))
    zp = draw(st.integers(max(info.min, -1000), min(info.max, 1000)))
    values = np.arange(info.min, info.max + 1, dtype=np.int64).astype(dtype)
    real = dequantize(values, QuantParams(scale, zp))
    # Thresholds exactly on representable values (where off-by-one bugs live) or anywhere.
    on_grid = st.sampled_from(real.tolist()).map(float)
    nudged = st.tuples(on_grid, st.sampled_from([-1e-7, 1e-7, -1e-12, 1e-12])).map(sum)
    anywhere = st.floats(float(real.min()) - 1, float(real.max()) + 1, allow_nan=False)
    threshold = draw(st.one_of(on_grid, nudged, anywhere))
    return dtype, QuantParams(scale, zp), values, threshold


@settings(max_examples=400, deadline=None)
@given(quantized_tensor())
def test_integer_threshold_selects_what_dequantize_then_compare_selects(case):
    dtype, quant, values, threshold = case
    expected = dequantize(values, quant) >= np.float32(threshold)
    q = quantize_threshold(threshold, quant, dtype)
    assert np.array_equal(values.astype(np.int64) >= q, expected)
    assert np.array_equal(threshold_mask(values, quant, threshold), expected)


def test_threshold_mask_float_tensor():
    scores = np.array([0.1, 0.5, 0.49999, 0.9], dtype=np.float32)
    assert threshold_mask(scores, NOT_QUANTIZED, 0.5).tolist() == [False, True, False, True]


def test_threshold_mask_all_or_nothing_does_not_compare_out_of_range():
    raw = np.array([-128, 0, 127], dtype=np.int8)
    quant = QuantParams(1 / 256, -128)
    assert threshold_mask(raw, quant, -1.0).tolist() == [True, True, True]
    assert threshold_mask(raw, quant, 2.0).tolist() == [False, False, False]
    with pytest.raises(ValueError, match="NaN"):
        threshold_mask(raw, quant, math.nan)
