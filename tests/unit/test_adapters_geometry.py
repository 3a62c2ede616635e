"""Tier 1: fitting frames into the input tensor and mapping boxes back exactly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.inference.adapters.common import BBox, Object
from edge_agent.inference.geometry import (
    Fit,
    objects_to_image,
    plan_fit,
    to_image,
)


def test_letterbox_portrait_like_ultralytics():
    # grace_hopper.bmp: 512x600 into 640x640 -> gain 640/600, 546x640, pad (94/2 - 0.1).
    fit = plan_fit(512, 600, 640, 640, "letterbox")
    assert fit == Fit(512, 600, 640, 640, 546 / 512, 640 / 600, 47, 0, 546, 640)


def test_letterbox_landscape_and_odd_padding():
    fit = plan_fit(1280, 720, 640, 640, "letterbox")
    assert (fit.new_w, fit.new_h, fit.pad_x, fit.pad_y) == (640, 360, 0, 140)
    # 512x341 -> 640x426: pad 214 total, 107 each side.
    fit = plan_fit(512, 341, 640, 640, "letterbox")
    assert (fit.new_w, fit.new_h, fit.pad_x, fit.pad_y) == (640, 426, 0, 107)
    # Odd total pad 3: Ultralytics puts round(1.5 - 0.1) = 1 on top, 2 below.
    fit = plan_fit(100, 97, 100, 100, "letterbox")
    assert (fit.new_w, fit.new_h, fit.pad_x, fit.pad_y) == (100, 97, 0, 1)


def test_letterbox_upscales_small_frames():
    fit = plan_fit(320, 240, 640, 640, "letterbox")
    assert (fit.new_w, fit.new_h, fit.pad_x, fit.pad_y) == (640, 480, 0, 80)
    assert fit.scale_x == fit.scale_y == 2.0


def test_stretch_scales_each_axis():
    fit = plan_fit(1280, 720, 300, 300, "stretch")
    assert fit == Fit(1280, 720, 300, 300, 300 / 1280, 300 / 720, 0, 0, 300, 300)


@pytest.mark.parametrize(
    "args",
    [(0, 10, 10, 10, "stretch"), (10, 10, -1, 10, "letterbox"), (10.5, 10, 10, 10, "stretch")],
)
def test_plan_fit_rejects_bad_sizes(args):
    with pytest.raises(ValueError, match="positive integer"):
        plan_fit(*args)


def test_plan_fit_rejects_unknown_mode():
    with pytest.raises(ValueError, match="letterbox"):
        plan_fit(10, 10, 10, 10, "crop")


def test_to_image_exact_values():
    fit = plan_fit(512, 600, 640, 640, "letterbox")
    # The resized image spans x 47..593 in the tensor: its edges map to the frame edges.
    assert to_image(BBox(47, 0, 593, 640), fit) == BBox(0.0, 0.0, 512.0, 600.0)
    box = to_image(BBox(47 + 54.6, 64, 47 + 109.2, 128), fit)
    assert list(box) == pytest.approx([51.2, 60.0, 102.4, 120.0])


def test_to_image_clips_to_the_frame():
    fit = plan_fit(512, 600, 640, 640, "letterbox")
    assert to_image(BBox(0, -5, 700, 700), fit) == BBox(0.0, 0.0, 512.0, 600.0)


def test_objects_to_image_drops_boxes_inside_the_padding():
    fit = plan_fit(512, 600, 640, 640, "letterbox")
    inside = Object(0, 0.9, BBox(100, 100, 200, 200))
    in_pad = Object(1, 0.8, BBox(0, 100, 40, 200))  # left pad is 0..47
    mapped = objects_to_image([inside, in_pad], fit)
    assert len(mapped) == 1
    assert mapped[0].id == 0 and mapped[0].score == 0.9
    assert mapped[0].bbox == to_image(inside.bbox, fit)


sizes = st.integers(1, 4000)


@settings(max_examples=300, deadline=None)
@given(
    src_w=sizes,
    src_h=sizes,
    dst_w=st.integers(16, 1280),
    dst_h=st.integers(16, 1280),
    mode=st.sampled_from(["stretch", "letterbox"]),
    fx=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    fy=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_round_trip_of_box_corners(src_w, src_h, dst_w, dst_h, mode, fx, fy):
    fit = plan_fit(src_w, src_h, dst_w, dst_h, mode)
    # Invariants of the plan itself.
    assert 1 <= fit.new_w <= dst_w and 1 <= fit.new_h <= dst_h
    assert fit.pad_x >= 0 and fit.pad_x + fit.new_w <= dst_w
    assert fit.pad_y >= 0 and fit.pad_y + fit.new_h <= dst_h
    if mode == "letterbox":
        assert fit.new_w == dst_w or fit.new_h == dst_h  # one axis fills the input
        # Aspect kept: each axis is the common gain up to rounding to whole pixels
        # (unless a side would round to 0 and is held at 1 px).
        gain = min(dst_w / src_w, dst_h / src_h)
        if src_w * gain >= 0.5:
            assert abs(fit.scale_x - gain) <= 0.5 / src_w + 1e-12
        if src_h * gain >= 0.5:
            assert abs(fit.scale_y - gain) <= 0.5 / src_h + 1e-12
    box = BBox(min(fx) * src_w, min(fy) * src_h, max(fx) * src_w, max(fy) * src_h)
    # The forward mapping, frame pixels -> input-tensor pixels, written out here.
    into_input = BBox(
        box.xmin * fit.scale_x + fit.pad_x,
        box.ymin * fit.scale_y + fit.pad_y,
        box.xmax * fit.scale_x + fit.pad_x,
        box.ymax * fit.scale_y + fit.pad_y,
    )
    back = to_image(into_input, fit)
    assert np.allclose(back, box, rtol=0, atol=1e-9 * max(src_w, src_h))
