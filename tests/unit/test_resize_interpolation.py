"""Which resize "auto" takes: INTER_AREA from a shrink of 2 up, bilinear below, and why."""

import cv2
import numpy as np
import pytest

from edge_agent.inference.preprocess import (
    AREA_FROM,
    MAX_PLANS,
    Preprocessor,
    resize_interpolation,
)
from edge_agent.inference.tensors import QuantParams, TensorSpec


@pytest.mark.parametrize(
    ("src", "new", "mode", "expected"),
    [
        ((320, 240), (224, 224), "auto", cv2.INTER_LINEAR),  # a 1/2 decode: 1.43 x 1.07
        ((640, 480), (224, 224), "auto", cv2.INTER_AREA),  # 2.86 x 2.14
        ((512, 341), (224, 224), "auto", cv2.INTER_AREA),  # one axis by 2.29 is enough
        ((448, 300), (224, 224), "auto", cv2.INTER_AREA),  # exactly 2
        ((447, 300), (224, 224), "auto", cv2.INTER_LINEAR),  # just under 2
        ((640, 100), (224, 224), "auto", cv2.INTER_AREA),  # shrinks by 2.86, enlarges the other
        ((100, 100), (224, 224), "auto", cv2.INTER_LINEAR),  # enlarging
        ((640, 480), (224, 224), "linear", cv2.INTER_LINEAR),  # Ultralytics' exports
    ],
)
def test_the_rule(src, new, mode, expected):
    assert resize_interpolation(*src, *new, mode) == expected


def _blind_spots(src: tuple[int, int], new: tuple[int, int], interp: int) -> int:
    """Source pixels whose brightening leaves the resized image unchanged."""
    w, h = src
    blind = 0
    for y in range(h):
        for x in range(w):
            impulse = np.zeros((h, w), np.float32)
            impulse[y, x] = 1.0
            if not cv2.resize(impulse, new, interpolation=interp).any():
                blind += 1
    return blind


@pytest.mark.parametrize(
    ("src", "new"),
    [((32, 24), (23, 23)), ((40, 30), (21, 21)), ((45, 33), (20, 20)), ((60, 45), (20, 20))],
)
def test_the_choice_weighs_every_source_pixel(src, new):
    # Why the line is at 2: bilinear below it, INTER_AREA from it, never skip a pixel...
    chosen = resize_interpolation(*src, *new, "auto")
    assert _blind_spots(src, new, chosen) == 0
    # ...and bilinear from 2 up would (the aliasing INTER_AREA is there to avoid).
    if src[0] >= AREA_FROM * new[0] or src[1] >= AREA_FROM * new[1]:
        assert _blind_spots(src, new, cv2.INTER_LINEAR) > 0


def test_the_preprocessor_resizes_as_the_rule_says():
    spec = TensorSpec(0, "x", (1, 224, 224, 3), np.dtype(np.uint8), QuantParams(1 / 255, 0))
    pre = Preprocessor(spec)
    frame = np.random.default_rng(5).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    out = np.empty(spec.shape, np.uint8)
    pre(frame, out)
    bilinear = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out[0], cv2.cvtColor(bilinear, cv2.COLOR_BGR2RGB))
    # A frame of another size takes the rule again (the plan is cached per size).
    big = np.random.default_rng(6).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    pre(big, out)
    area = cv2.resize(big, (224, 224), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out[0], cv2.cvtColor(area, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_frames_of_several_sizes_in_turn_each_get_their_own_input(resize):
    # Cameras of different sizes share the model: the plans are kept per size, the
    # scratch buffers shared. Each frame must still give what it gives on its own, in
    # any order, and beyond the plans kept (MAX_PLANS).
    spec = TensorSpec(0, "x", (1, 96, 128, 3), np.dtype(np.int8), QuantParams(1 / 255, -128))
    rng = np.random.default_rng(7)
    sizes = [(160, 120), (640, 480), (128, 96), (300, 40), (40, 300), (97, 61)] * 2
    sizes += [(50 + i, 60 + i) for i in range(MAX_PLANS)]
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]
    shared = Preprocessor(spec, resize=resize)
    for frame in frames + frames[::-1]:
        out = np.empty(spec.shape, np.int8)
        expected = np.empty(spec.shape, np.int8)
        fit = shared(frame, out)
        alone = Preprocessor(spec, resize=resize)(frame, expected)
        assert fit == alone
        np.testing.assert_array_equal(out, expected)
