"""Tier 1: top_k over quantized and float classification outputs."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.classification import top_k
from edge_agent.inference.adapters.common import Class
from edge_agent.inference.tensors import NOT_QUANTIZED, QuantParams, dequantize

U8 = QuantParams(1 / 256, 0)


def test_quantized_top_k_exact_scores_and_order():
    raw = np.zeros((1, 10), dtype=np.uint8)
    raw[0, [3, 7, 1, 9]] = [200, 128, 200, 20]
    result = top_k(raw, U8, 3, 0.1)
    # Ties (ids 1 and 3 at 200/256) go to the lower id first.
    assert result == [Class(1, 200 / 256), Class(3, 200 / 256), Class(7, 0.5)]
    assert all(isinstance(c.score, float) and isinstance(c.id, int) for c in result)


def test_threshold_is_inclusive_and_applied_before_k():
    raw = np.array([128, 127, 129], dtype=np.uint8)
    assert top_k(raw, U8, 0, 0.5) == [Class(2, 129 / 256), Class(0, 0.5)]
    assert top_k(raw, U8, 10, 0.9) == []


def test_k_zero_or_negative_returns_everything_above_threshold():
    raw = np.arange(1001, dtype=np.int64) % 256
    raw = raw.astype(np.uint8)
    everything = top_k(raw, U8, 0, 250 / 256)
    assert len(everything) == sum(1 for v in raw if v >= 250)
    assert top_k(raw, U8, -1, 250 / 256) == everything
    assert [c.score for c in everything] == sorted((c.score for c in everything), reverse=True)


def test_int8_with_zero_point():
    quant = QuantParams(0.1, -10)
    raw = np.array([[-10, 0, 5, -128, 127]], dtype=np.int8)
    result = top_k(raw, quant, 2, 0.5)
    assert [c.id for c in result] == [4, 2]
    assert result[0].score == pytest.approx(13.7, abs=1e-5)
    assert result[1].score == pytest.approx(1.5, abs=1e-6)


def test_float_scores_used_as_given():
    scores = np.array([[-2.0, 3.5, 0.25, 3.5]], dtype=np.float32)
    assert top_k(scores, NOT_QUANTIZED, 2, -1.0) == [Class(1, 3.5), Class(3, 3.5)]
    assert top_k(scores, NOT_QUANTIZED, 0, 0.25) == [Class(1, 3.5), Class(3, 3.5), Class(2, 0.25)]


def test_nan_scores_never_selected():
    scores = np.array([math.nan, 0.7], dtype=np.float32)
    assert top_k(scores, NOT_QUANTIZED, 0, 0.0) == [Class(1, pytest.approx(0.7))]


def test_accepts_leading_unit_axes_and_rejects_others():
    raw = np.array([[[[1, 2, 3]]]], dtype=np.uint8)
    assert top_k(raw, U8, 1, 0.0)[0].id == 2
    with pytest.raises(ModelError, match=r"\[2, 3\]"):
        top_k(np.zeros((2, 3), np.uint8), U8, 1, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    dtype=st.sampled_from([np.uint8, np.int8]),
    scale=st.floats(1e-4, 1.0),
    zp=st.integers(-128, 127),
    k=st.integers(-1, 12),
    threshold=st.floats(-5.0, 5.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_a_sort_of_the_dequantized_scores(dtype, scale, zp, k, threshold, seed):
    info = np.iinfo(dtype)
    zp = int(np.clip(zp, info.min, info.max))
    quant = QuantParams(scale, zp)
    raw = np.random.default_rng(seed).integers(info.min, info.max + 1, 40).astype(dtype)
    real = dequantize(raw, quant)
    ref = sorted(
        (Class(i, float(v)) for i, v in enumerate(real) if v >= np.float32(threshold)),
        key=lambda c: (-c.score, c.id),
    )
    if k > 0:
        ref = ref[:k]
    assert top_k(raw, quant, k, threshold) == ref
