"""Tier 1: TFLite_Detection_PostProcess outputs: which is which, and decoding."""

import numpy as np
import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.common import BBox, Object
from edge_agent.inference.adapters.ssd import (
    SsdLayout,
    decode_ssd,
    is_ssd_signature,
    resolve_ssd_order,
    split_ssd,
    ssd_layout,
)
from edge_agent.inference.tensors import NOT_QUANTIZED, TensorSpec

F32 = np.dtype(np.float32)
BOXES, VEC, COUNT = (1, 10, 4), (1, 10), (1,)


def specs(*pairs):
    return [TensorSpec(i, name, shape, F32, NOT_QUANTIZED) for i, (name, shape) in enumerate(pairs)]


def test_tf1_names_and_order():
    outputs = specs(
        ("TFLite_Detection_PostProcess", BOXES),
        ("TFLite_Detection_PostProcess:1", VEC),
        ("TFLite_Detection_PostProcess:2", VEC),
        ("TFLite_Detection_PostProcess:3", COUNT),
    )
    assert ssd_layout(outputs) == SsdLayout(0, 1, 2, 3, True)


def test_tf2_names_and_order():
    # As listed by the interpreter for TF2 detection-zoo exports.
    outputs = specs(
        ("StatefulPartitionedCall:1", VEC),
        ("StatefulPartitionedCall:3", BOXES),
        ("StatefulPartitionedCall:0", COUNT),
        ("StatefulPartitionedCall:2", VEC),
    )
    assert ssd_layout(outputs) == SsdLayout(1, 3, 0, 2, True)


def test_names_with_a_line_break_are_read_like_any_other():
    # Tensor names are any string (a damaged or hand-edited file, an ONNX name).
    outputs = specs(
        ("post\nprocess", BOXES),
        ("post\nprocess:1", VEC),
        ("post\nprocess:2", VEC),
        ("post\nprocess:3", COUNT),
    )
    assert ssd_layout(outputs) == SsdLayout(0, 1, 2, 3, True)
    outputs[1:3] = specs(("x\n", VEC), ("y\n", VEC))
    assert ssd_layout(outputs) == SsdLayout(0, 1, 2, 3, False)


def test_tf2_names_in_op_order():
    # Model Maker lists them boxes, classes, scores, count with the same suffixes.
    outputs = specs(
        ("StatefulPartitionedCall:3", BOXES),
        ("StatefulPartitionedCall:2", VEC),
        ("StatefulPartitionedCall:1", VEC),
        ("StatefulPartitionedCall:0", COUNT),
    )
    assert ssd_layout(outputs) == SsdLayout(0, 1, 2, 3, True)


def test_signature_style_names():
    outputs = specs(
        ("detection_scores", VEC),
        ("detection_boxes", BOXES),
        ("num_detections", COUNT),
        ("detection_classes", VEC),
    )
    assert ssd_layout(outputs) == SsdLayout(1, 3, 0, 2, True)


def test_uninformative_names_fall_back_to_the_export_order_unconfirmed():
    tf1 = specs(("a", BOXES), ("b", VEC), ("c", VEC), ("d", COUNT))
    assert ssd_layout(tf1) == SsdLayout(0, 1, 2, 3, False)
    tf2 = specs(("a", VEC), ("b", BOXES), ("c", COUNT), ("d", VEC))
    assert ssd_layout(tf2) == SsdLayout(1, 3, 0, 2, False)


def test_suffixes_that_contradict_the_shapes_are_not_trusted():
    # boxes named :1 fits neither convention.
    outputs = specs(("x:1", BOXES), ("x:0", VEC), ("x:2", VEC), ("x:3", COUNT))
    assert ssd_layout(outputs).certain is False
    # Different prefixes: not one op's outputs.
    outputs = specs(("p", BOXES), ("q:1", VEC), ("q:2", VEC), ("q:3", COUNT))
    assert ssd_layout(outputs).certain is False


@pytest.mark.parametrize(
    "shapes",
    [
        [BOXES, VEC, VEC],
        [BOXES, VEC, VEC, COUNT, COUNT],
        [BOXES, (1, 9), VEC, COUNT],
        [(1, 10, 5), VEC, VEC, COUNT],
        [BOXES, BOXES, VEC, COUNT],
        [(1, 1001)],
    ],
)
def test_non_ssd_shapes_raise_naming_them(shapes):
    outputs = specs(*[(f"t{i}", s) for i, s in enumerate(shapes)])
    assert not is_ssd_signature(shapes)
    with pytest.raises(ModelError, match=r"got \[") as info:
        ssd_layout(outputs)
    assert str(list(shapes[0])) in str(info.value)


def arrays(order, n=10, count=3, classes=(17.0, 0.0, 2.0), scores=(0.9, 0.6, 0.3)):
    """The four outputs in the given order ('b', 'c', 's', 'n')."""
    boxes = np.zeros((1, n, 4), np.float32)
    cls = np.zeros((1, n), np.float32)
    sc = np.zeros((1, n), np.float32)
    cls[0, : len(classes)] = classes
    sc[0, : len(scores)] = scores
    by_key = {"b": boxes, "c": cls, "s": sc, "n": np.array([count], np.float32)}
    return [by_key[k] for k in order]


def test_resolve_confirms_a_guess():
    guess = SsdLayout(0, 1, 2, 3, False)
    assert resolve_ssd_order(arrays("bcsn"), guess) == SsdLayout(0, 1, 2, 3, True)


def test_resolve_corrects_a_wrong_guess():
    guess = SsdLayout(0, 1, 2, 3, False)
    assert resolve_ssd_order(arrays("bscn"), guess) == SsdLayout(0, 2, 1, 3, True)


def test_resolve_without_a_layout_uses_shapes_then_values():
    assert resolve_ssd_order(arrays("sbnc")) == SsdLayout(1, 3, 0, 2, True)
    assert resolve_ssd_order(arrays("bcsn")) == SsdLayout(0, 1, 2, 3, True)


def test_resolve_decides_from_one_side_only():
    # Scores all exactly 0/1 but classes above 1: the class vector decides.
    tensors = arrays("bscn", classes=(5.0, 1.0, 0.0), scores=(1.0, 1.0, 0.0))
    assert resolve_ssd_order(tensors, SsdLayout(0, 1, 2, 3, False)).classes == 2


def test_resolve_leaves_undecidable_frames_uncertain():
    guess = SsdLayout(0, 1, 2, 3, False)
    # No detections: padding says nothing.
    assert resolve_ssd_order(arrays("bscn", count=0), guess) == guess
    # Every class 0/1 and every score exactly 0/1.
    ambiguous = arrays("bcsn", classes=(1.0, 0.0, 1.0), scores=(1.0, 1.0, 0.0))
    assert resolve_ssd_order(ambiguous, guess) == guess


def test_resolve_keeps_a_certain_layout():
    certain = SsdLayout(0, 1, 2, 3, True)
    assert resolve_ssd_order(arrays("bscn"), certain) is certain


def test_split_ssd_reorders():
    tensors = arrays("sbnc")
    boxes, classes, scores, count = split_ssd(tensors, SsdLayout(1, 3, 0, 2, True))
    assert boxes.shape == (1, 10, 4) and count.tolist() == [3.0]
    assert classes[0, 0] == 17.0 and scores[0, 0] == np.float32(0.9)


def test_decode_exact_boxes_in_input_pixels():
    boxes = np.zeros((1, 10, 4), np.float32)
    boxes[0, 0] = [0.25, 0.5, 0.75, 1.0]  # ymin, xmin, ymax, xmax
    boxes[0, 1] = [-0.1, -0.2, 0.5, 1.3]  # clipped to the input
    boxes[0, 2] = [0.0, 0.0, 0.5, 0.5]
    classes = np.array([[17, 0, 2] + [0] * 7], np.float32)
    scores = np.array([[0.6, 0.9, 0.5] + [0.99] * 7], np.float32)  # padding ignored
    objs = decode_ssd(boxes, classes, scores, np.array([3.0]), 0.55, (300, 200))
    assert objs == [
        Object(0, pytest.approx(0.9), BBox(0.0, 0.0, 300.0, 100.0)),
        Object(17, pytest.approx(0.6), BBox(150.0, 50.0, 300.0, 150.0)),
    ]
    assert all(type(o.id) is int and type(o.score) is float for o in objs)


def test_decode_threshold_inclusive_and_count_clamped():
    boxes = np.zeros((1, 4, 4), np.float32)
    classes = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    scores = np.array([[0.5, 0.5, 0.4, 0.7]], np.float32)
    objs = decode_ssd(boxes, classes, scores, np.array([99.0]), 0.5, (10, 10))
    # Sorted by score, ties in the op's order.
    assert [o.id for o in objs] == [4, 1, 2]
    assert decode_ssd(boxes, classes, scores, np.array([0.0]), 0.0, (10, 10)) == []
    assert decode_ssd(boxes, classes, scores, np.array([-3.0]), 0.0, (10, 10)) == []
    assert decode_ssd(boxes, classes, scores, np.array([np.nan]), 0.0, (10, 10)) == []


def test_decode_rounds_float_class_ids():
    boxes = np.zeros((1, 1, 4), np.float32)
    objs = decode_ssd(boxes, np.array([[2.9999998]]), np.array([[0.8]]), np.array([1]), 0.1, (1, 1))
    assert objs[0].id == 3


def test_decode_rejects_mismatched_sizes():
    with pytest.raises(ModelError, match="4 boxes, 3 classes"):
        decode_ssd(np.zeros((1, 4, 4)), np.zeros((1, 3)), np.zeros((1, 4)), np.ones(1), 0.5, (1, 1))
