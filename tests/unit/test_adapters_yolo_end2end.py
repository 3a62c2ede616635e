"""End-to-end YOLO heads (YOLOv10, YOLO26, nms=True exports): [1, N, 6] detections."""

import numpy as np
import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.common import BBox
from edge_agent.inference.adapters.task import check_export_task, detect_task, model_family
from edge_agent.inference.adapters.yolo import decode_yolo, yolo_shape
from edge_agent.inference.tensors import NOT_QUANTIZED, QuantParams, TensorSpec

SIZE = (640, 640)


def head(rows, n=300):
    """A float [1, n, 6] output whose first rows are ``rows``, the rest unused (zeros)."""
    out = np.zeros((1, n, 6), np.float32)
    out[0, : len(rows)] = rows
    return out


def decode(output, quant=NOT_QUANTIZED, threshold=0.25, max_detections=100, coords="auto"):
    return decode_yolo(
        output, quant, threshold, 0.45, max_detections, SIZE, coords=coords, family="auto"
    )


def test_normalized_detections_become_input_pixels_without_nms():
    rows = [
        [0.10, 0.20, 0.50, 0.90, 0.91, 16],
        [0.55, 0.30, 0.95, 0.80, 0.62, 0],
        # Overlaps the first one fully: the model's own choice stands, no NMS drops it.
        [0.11, 0.21, 0.50, 0.90, 0.60, 16],
        [0.00, 0.00, 0.10, 0.10, 0.20, 3],  # below the threshold
    ]
    objects = decode(head(rows))
    assert [(o.id, round(o.score, 2)) for o in objects] == [(16, 0.91), (0, 0.62), (16, 0.6)]
    assert objects[0].bbox == pytest.approx(BBox(64.0, 128.0, 320.0, 576.0))


def test_pixel_corners_are_kept_and_max_detections_applies():
    rows = [[100, 50, 300, 400, 0.8, 2], [10, 10, 60, 90, 0.9, 5]]
    objects = decode(head(rows), max_detections=1)
    assert len(objects) == 1 and objects[0].id == 5
    assert objects[0].bbox == pytest.approx(BBox(10, 10, 60, 90))


def test_unused_rows_never_become_detections_even_at_threshold_zero():
    rows = [[0.1, 0.1, 0.2, 0.2, 0.5, 7]]
    objects = decode(head(rows), threshold=0.0)
    assert [o.id for o in objects] == [7]


def test_quantized_class_ids_round_to_the_nearest_integer():
    quant = QuantParams(80 / 255, -128)  # one int8 scale for corners, score and class
    real = head([[0.0, 0.0, 0.5, 0.5, 0.9, 79], [0.0, 0.0, 0.5, 0.5, 0.7, 41]], n=10)
    raw = np.clip(np.round(real / quant.scale) + quant.zero_point, -128, 127).astype(np.int8)
    assert [o.id for o in decode(raw, quant)] == [79, 41]


def test_the_shape_and_task_of_an_end_to_end_head():
    spec = TensorSpec(0, "output0", (1, 300, 6), np.dtype(np.float32), NOT_QUANTIZED)
    assert detect_task([spec]) == "detection-yolo"
    assert model_family("detection-yolo", [spec], SIZE) == "yolo-end2end"
    assert yolo_shape((1, 300, 6), family="yolo-end2end").num_classes == 0
    with pytest.raises(ModelError, match="need 6"):
        yolo_shape((1, 300, 7), family="yolo-end2end")


@pytest.mark.parametrize("task", ["pose", "segment", "obb"])
def test_ultralytics_heads_that_are_not_decoded_are_refused(task):
    with pytest.raises(ModelError, match=f"Ultralytics {task} model"):
        check_export_task(task)


@pytest.mark.parametrize("task", [None, "detect", "classify"])
def test_detect_and_classify_exports_pass(task):
    check_export_task(task)
