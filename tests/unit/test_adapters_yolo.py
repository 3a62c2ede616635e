"""Tier 1: YOLOv8 decoding: layouts, coordinates, integer thresholds, NMS."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.common import BBox, Object
from edge_agent.inference.adapters.yolo import (
    FEATURES_FIRST,
    FEATURES_LAST,
    YoloShape,
    decode_yolo,
    yolo_shape,
)
from edge_agent.inference.tensors import NOT_QUANTIZED, QuantParams, TensorSpec, dequantize

# The real model's output quantization: real = (q + 128) * 0.003986.
Q = QuantParams(0.003986023832112551, -128)


def quantize(real):
    return np.clip(np.round(np.asarray(real) / Q.scale + Q.zero_point), -128, 127).astype(np.int8)


def table(cands, nc=3, n=50):
    """A float [4+nc, n] table; cands: (index, cx, cy, w, h, class, score)."""
    out = np.zeros((4 + nc, n), np.float32)
    for i, cx, cy, w, h, cls, score in cands:
        out[:4, i] = [cx, cy, w, h]
        out[4 + cls, i] = score
    return out


def test_yolo_shape():
    assert yolo_shape((1, 84, 8400)) == YoloShape(FEATURES_FIRST, 80, 8400)
    assert yolo_shape((1, 8400, 84)) == YoloShape(FEATURES_LAST, 80, 8400)
    assert yolo_shape((6, 2100)) == YoloShape(FEATURES_FIRST, 2, 2100)
    assert yolo_shape((1, 84, 84), FEATURES_LAST) == YoloShape(FEATURES_LAST, 80, 84)
    with pytest.raises(ModelError, match="square, so .* export the model at another image size"):
        yolo_shape((1, 84, 84))
    with pytest.raises(ModelError, match="4 features"):
        yolo_shape((1, 4, 8400))
    with pytest.raises(ModelError, match=r"\[2, 84, 8400\]"):
        yolo_shape((2, 84, 8400))
    with pytest.raises(ValueError, match="layout"):
        yolo_shape((1, 84, 8400), "rows")


def test_int8_decode_exact_values():
    real = table(
        [
            (3, 0.5, 0.25, 0.5, 0.25, 2, 0.9),  # kept
            (7, 0.5, 0.25, 0.45, 0.25, 2, 0.8),  # same class, IoU 0.9 -> suppressed
            (9, 0.5, 0.25, 0.45, 0.25, 1, 0.7),  # other class -> kept
            (11, 0.1, 0.1, 0.1, 0.1, 0, 0.2),  # below threshold
        ]
    )
    raw = quantize(real)[None]
    objs = decode_yolo(raw, Q, 0.25, 0.45, 100, (640, 480))
    deq = dequantize(raw[0], Q)

    def expected(i, cls):
        cx, cy, w, h = (float(v) for v in deq[:4, i].astype(np.float64))
        box = BBox((cx - w / 2) * 640, (cy - h / 2) * 480, 0, 0)
        box = box._replace(xmax=box.xmin + w * 640, ymax=box.ymin + h * 480)
        return Object(cls, float(deq[4 + cls, i]), box)

    assert objs == [expected(3, 2), expected(9, 1)]
    # The quantized box is close to the real one: [160, 60, 480, 180] in input pixels.
    assert list(objs[0].bbox) == pytest.approx([160, 60, 480, 180], abs=2.0)
    assert objs[0].score == pytest.approx(0.9, abs=Q.scale)


def test_transposed_layout_gives_the_same_objects():
    real = table([(3, 0.5, 0.5, 0.2, 0.2, 1, 0.9), (20, 0.3, 0.3, 0.1, 0.2, 0, 0.5)])
    raw = quantize(real)
    first = decode_yolo(raw[None], Q, 0.25, 0.45, 100, (320, 320))
    last = decode_yolo(np.ascontiguousarray(raw.T)[None], Q, 0.25, 0.45, 100, (320, 320))
    assert len(first) == 2 and first == last
    forced = decode_yolo(raw.T[None], Q, 0.25, 0.45, 100, (320, 320), layout=FEATURES_LAST)
    assert forced == first


def test_pixel_coordinates_are_detected_and_overridable():
    normalized = table([(3, 0.5, 0.25, 0.5, 0.25, 0, 0.9)])
    pixels = normalized.copy()
    pixels[:4] *= np.array([[640], [480], [640], [480]], np.float32)
    pixels[:2, 40] = [630.0, 470.0]  # anchor-grid centres reach the input size
    want = [Object(0, pytest.approx(0.9), BBox(160.0, 60.0, 480.0, 180.0))]
    assert decode_yolo(normalized[None], NOT_QUANTIZED, 0.5, 0.45, 10, (640, 480)) == want
    assert decode_yolo(pixels[None], NOT_QUANTIZED, 0.5, 0.45, 10, (640, 480)) == want
    forced = decode_yolo(pixels[None], NOT_QUANTIZED, 0.5, 0.45, 10, (1, 1), coords="pixels")
    assert forced == want
    forced = decode_yolo(
        normalized[None], NOT_QUANTIZED, 0.5, 0.45, 10, (640, 480), coords="pixels"
    )
    assert list(forced[0].bbox) == pytest.approx([0.25, 0.125, 0.75, 0.375])
    # Small pixel boxes near the origin would look normalized: the override settles it.
    tiny = table([(0, 1.5, 1.5, 1.0, 1.0, 0, 0.9)])
    tiny_objs = decode_yolo(tiny[None], NOT_QUANTIZED, 0.5, 0.45, 10, (64, 64), coords="normalized")
    assert tiny_objs[0].bbox == BBox(64.0, 64.0, 128.0, 128.0)


def test_best_class_wins_and_class_ties_go_to_the_lower_id():
    real = table([(0, 0.5, 0.5, 0.2, 0.2, 2, 0.8)])
    real[4 + 1, 0] = 0.6
    assert [o.id for o in decode_yolo(real[None], NOT_QUANTIZED, 0.5, 0.45, 10, (10, 10))] == [2]
    real[4 + 0, 0] = 0.8
    assert [o.id for o in decode_yolo(real[None], NOT_QUANTIZED, 0.5, 0.45, 10, (10, 10))] == [0]


def test_limits_agnostic_and_empty():
    cands = [(i, 0.05 + 0.09 * i, 0.5, 0.05, 0.05, i % 3, 0.3 + 0.06 * i) for i in range(10)]
    real = table(cands)
    every = decode_yolo(real[None], NOT_QUANTIZED, 0.25, 0.45, 0, (100, 100))
    assert [o.score for o in every] == sorted((o.score for o in every), reverse=True)
    assert len(every) == 10
    assert decode_yolo(real[None], NOT_QUANTIZED, 0.25, 0.45, 4, (100, 100)) == every[:4]
    capped = decode_yolo(real[None], NOT_QUANTIZED, 0.25, 0.45, 0, (100, 100), max_candidates=3)
    assert capped == every[:3]
    # Two overlapping boxes of different classes: both kept unless agnostic.
    pair = table([(0, 0.5, 0.5, 0.4, 0.4, 0, 0.9), (1, 0.5, 0.5, 0.4, 0.38, 1, 0.8)])
    assert len(decode_yolo(pair[None], NOT_QUANTIZED, 0.25, 0.45, 0, (10, 10))) == 2
    agnostic = decode_yolo(pair[None], NOT_QUANTIZED, 0.25, 0.45, 0, (10, 10), agnostic=True)
    assert [o.id for o in agnostic] == [0]
    assert decode_yolo(real[None], NOT_QUANTIZED, 0.99, 0.45, 0, (100, 100)) == []


def test_argument_errors():
    raw = np.zeros((1, 84, 8400), np.int8)
    with pytest.raises(ValueError, match="iou_threshold"):
        decode_yolo(raw, Q, 0.25, 1.5, 10, (640, 640))
    with pytest.raises(ValueError, match="coords"):
        decode_yolo(raw, Q, 0.25, 0.45, 10, (640, 640), coords="cm")
    with pytest.raises(ValueError, match="NaN"):
        decode_yolo(raw, Q, float("nan"), 0.45, 10, (640, 640))
    with pytest.raises(ModelError, match="square"):
        decode_yolo(np.zeros((1, 84, 84), np.int8), Q, 0.25, 0.45, 10, (640, 640))


def test_full_size_int8_output_with_nothing_above_threshold():
    raw = np.full((1, 84, 8400), -128, np.int8)
    assert decode_yolo(raw, Q, 0.25, 0.45, 100, (640, 640)) == []


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), threshold=st.floats(0.0, 1.0), nc=st.integers(1, 6))
def test_integer_path_equals_dequantize_then_decode(seed, threshold, nc):
    rng = np.random.default_rng(seed)
    raw = rng.integers(-128, 128, (1, 4 + nc, 300)).astype(np.int8)
    as_float = dequantize(raw, Q)
    got = decode_yolo(raw, Q, threshold, 0.45, 0, (640, 640), coords="normalized")
    want = decode_yolo(as_float, NOT_QUANTIZED, threshold, 0.45, 0, (640, 640), coords="normalized")
    assert got == want


# --- NMS against a brute-force reference ------------------------------------------------


def opencv_overlap(a, b):
    """IoU of two (x, y, w, h) boxes, rounded as cv::dnn's rectOverlap does for Rect2d."""
    area_a, area_b = a[2] * a[3], b[2] * b[3]
    if area_a + area_b <= np.finfo(np.float64).eps:
        return np.float32(1.0)
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    w = min(a[0] + a[2], b[0] + b[2]) - x1
    h = min(a[1] + a[3], b[1] + b[3]) - y1
    inter = w * h if w > 0 and h > 0 else 0.0
    distance = 1.0 - inter / (area_a + area_b - inter)
    return np.float32(1.0) - np.float32(distance)


def reference_nms(rects, scores, classes, iou, agnostic):
    order = sorted(range(len(rects)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(
            (not agnostic and classes[i] != classes[j])
            or opencv_overlap(rects[i], rects[j]) <= np.float32(iou)
            for j in kept
        ):
            kept.append(i)
    return kept


boxes = st.lists(
    st.tuples(
        st.integers(0, 60),  # cx
        st.integers(0, 60),  # cy
        st.integers(0, 20).map(lambda v: 2 * v),  # w (even: exact corners)
        st.integers(0, 20).map(lambda v: 2 * v),  # h
        st.integers(0, 2),  # class
        st.sampled_from([0.3, 0.5, 0.5, 0.7, 0.9]),  # ties on purpose
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(cands=boxes, iou=st.sampled_from([0.0, 0.3, 0.45, 0.5, 0.7, 1.0]), agnostic=st.booleans())
def test_nms_matches_brute_force(cands, iou, agnostic):
    n = len(cands)
    real = table(
        [(i, cx, cy, w, h, c, s) for i, (cx, cy, w, h, c, s) in enumerate(cands)], n=max(n, 8)
    )
    got = decode_yolo(
        real[None], NOT_QUANTIZED, 0.25, iou, 0, (64, 64), coords="pixels", agnostic=agnostic
    )
    rects = [(cx - w / 2, cy - h / 2, float(w), float(h)) for cx, cy, w, h, _, _ in cands]
    scores = [float(np.float32(s)) for *_, s in cands]
    classes = [c for *_, c, _ in cands]
    kept = reference_nms(rects, scores, classes, iou, agnostic)
    want = [
        Object(classes[i], scores[i], BBox(rects[i][0], rects[i][1], *_far_corner(rects[i])))
        for i in kept
    ]
    assert got == want


def _far_corner(rect):
    return rect[0] + rect[2], rect[1] + rect[3]


def test_yolo_family_from_candidate_count():
    from edge_agent.inference.adapters.yolo import grid_cells, yolo_family

    assert grid_cells((640, 640)) == 8400 and grid_cells((320, 256)) == 40 * 32 + 20 * 16 + 10 * 8
    assert yolo_family((1, 25200, 85), (640, 640)) == "yolov5"
    assert yolo_family((1, 84, 8400), (640, 640)) == "yolov8"  # YOLOv8 and YOLO11
    assert yolo_family((1, 8400, 84), (640, 640)) == "yolov8"
    assert yolo_family((1, 25200, 85), None) == "yolov8"  # unknown input: v8
    # Three candidates per cell cannot be v8, whichever way round the axes are.
    assert yolo_family((1, 85, 25200), (640, 640)) == "yolov5"
    assert yolo_family((1, 64, 7), (64, 64)) == "yolov8"  # fits neither count
    # End-to-end heads (YOLOv10, YOLO26, nms=True): [1, max_det, 6].
    assert yolo_family((1, 300, 6), (640, 640)) == "yolo-end2end"
    assert yolo_family((1, 300, 6), (640, 640), end2end=False) == "yolov8"
    assert yolo_family((1, 8400, 6), (640, 640)) == "yolov8"  # 2 classes, one per cell
    assert yolo_family((1, 8400, 6), (640, 640), end2end=True) == "yolo-end2end"
    assert yolo_family((1, 6, 8400), (640, 640)) == "yolov8"  # features-first: v8
    assert yolo_family((1, 300, 6), None) == "yolov8"  # unknown input, no flag


def test_yolov5_quantized_objectness_times_class():
    from edge_agent.inference.adapters.yolo import yolo_shape

    quant = QuantParams(1 / 255, 0)
    raw = np.zeros((1, 3 * grid_cells_64(), 5 + 2), np.uint8)
    # Candidate 3: box at the centre, objectness 0.8, classes 0.2 / 0.9 -> class 1, 0.72.
    raw[0, 3] = [128, 128, 64, 64, 204, 51, 230]
    # Candidate 7: class 0.9 but objectness 0.2 -> 0.18, below 0.25.
    raw[0, 7] = [10, 10, 5, 5, 51, 230, 0]
    assert yolo_shape(raw.shape, family="yolov5").num_classes == 2
    objs = decode_yolo(raw, quant, 0.25, 0.45, 0, (64, 64))
    assert len(objs) == 1 and objs[0].id == 1
    assert objs[0].score == pytest.approx((204 / 255) * (230 / 255), rel=1e-6)
    box = objs[0].bbox
    assert (box.xmin, box.xmax) == pytest.approx((64 * (128 - 32) / 255, 64 * (128 + 32) / 255))


def grid_cells_64():
    return 64 + 16 + 4


def test_more_classes_than_candidates_are_told_apart_by_the_input_size():
    # YOLOv8 on Open Images V7 (601 classes) exported at imgsz 160: [1, 605, 525], so the
    # features axis is the longer one; 525 is the candidate count of a 160x160 input.
    from edge_agent.inference.adapters.yolo import grid_cells, yolo_family
    from edge_agent.inference.postprocess import Decoder

    size = (160, 160)
    real = table([(7, 0.5, 0.25, 0.5, 0.25, 600, 0.9)], nc=601, n=grid_cells(size))
    expected = [Object(600, pytest.approx(0.9), BBox(40.0, 20.0, 120.0, 60.0))]
    assert real.shape == (605, 525) and yolo_family((1, 605, 525), size) == "yolov8"
    assert yolo_shape((1, 605, 525), input_size=size) == YoloShape(FEATURES_FIRST, 601, 525)
    assert decode_yolo(real[None], NOT_QUANTIZED, 0.25, 0.45, 100, size) == expected
    assert decode_yolo(real.T[None], NOT_QUANTIZED, 0.25, 0.45, 100, size) == expected
    output = TensorSpec(0, "output0", (1, 605, 525), np.dtype(np.float32), NOT_QUANTIZED)
    decoder = Decoder([output], size)
    assert (decoder.task, decoder.family, decoder.num_classes) == ("detection-yolo", "yolov8", 601)
