"""Tier 1: telling the task from the output signature, and rejecting misfits."""

import numpy as np
import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.common import (
    CLASSIFICATION,
    DETECTION_SSD,
    DETECTION_YOLO,
    TASKS,
)
from edge_agent.inference.adapters.task import detect_task, validate_task
from edge_agent.inference.tensors import NOT_QUANTIZED, QuantParams, TensorSpec


def out(*shapes, dtype=np.float32, quant=NOT_QUANTIZED):
    return [
        TensorSpec(i, f"out{i}", tuple(shape), np.dtype(dtype), quant)
        for i, shape in enumerate(shapes)
    ]


SSD_TF1 = out((1, 10, 4), (1, 10), (1, 10), (1,))
SSD_TF2 = out((1, 10), (1, 10, 4), (1,), (1, 10))
YOLO = out((1, 84, 8400), dtype=np.int8, quant=QuantParams(0.004, -128))
YOLO_T = out((1, 8400, 84))
CLS = out((1, 1001), dtype=np.uint8, quant=QuantParams(1 / 256, 0))


def test_task_names():
    assert TASKS == ("classification", "detection-ssd", "detection-yolo")


@pytest.mark.parametrize(
    ("outputs", "task"),
    [
        (SSD_TF1, DETECTION_SSD),
        (SSD_TF2, DETECTION_SSD),
        (YOLO, DETECTION_YOLO),
        (YOLO_T, DETECTION_YOLO),
        (out((1, 6, 2100)), DETECTION_YOLO),  # 2 classes at 320
        (CLS, CLASSIFICATION),
        (out((1000,)), CLASSIFICATION),
        (out((1, 1, 1, 1001)), CLASSIFICATION),
        (out((1, 1)), CLASSIFICATION),
        (out((1, 1, 84)), CLASSIFICATION),  # one unit axis is not a candidate axis
    ],
)
def test_detect_task(outputs, task):
    assert detect_task(outputs) == task
    validate_task(task, outputs)  # and the detected task validates


@pytest.mark.parametrize(
    "outputs",
    [
        out(),
        out((1, 84, 84)),  # square: layout unknowable
        out((1, 4, 8400)),  # no class row
        out((2, 1001)),  # batch of 2
        out((1, 10, 4), (1, 10), (1, 10)),  # SSD without count
        out((1, 1001), (1, 1001)),
        out((1, 20, 20, 255)),  # raw YOLOv3-style grid head
    ],
)
def test_detect_task_rejects_unknown_signatures(outputs):
    with pytest.raises(ModelError, match="cannot tell the task") as info:
        detect_task(outputs)
    text = str(info.value)
    for spec in outputs:
        assert str(list(spec.shape)) in text
    if not outputs:
        assert "no outputs" in text


def test_error_message_names_dtype_and_what_was_expected():
    with pytest.raises(ModelError) as info:
        detect_task(out((2, 1001), dtype=np.uint8))
    text = str(info.value)
    assert "out0 [2, 1001] uint8" in text
    assert "[1, 4+nc, N]" in text and "count [1]" in text and "[1, C]" in text


@pytest.mark.parametrize(
    ("task", "outputs"),
    [
        (DETECTION_YOLO, CLS),
        (DETECTION_SSD, YOLO),
        (CLASSIFICATION, YOLO),
        (CLASSIFICATION, SSD_TF1),
        (DETECTION_YOLO, SSD_TF2),
    ],
)
def test_validate_task_rejects_a_model_that_does_not_fit(task, outputs):
    with pytest.raises(ModelError, match=f"do not fit task {task}") as info:
        validate_task(task, outputs)
    assert str(list(outputs[0].shape)) in str(info.value)


def test_validate_task_rejects_unknown_task_names():
    with pytest.raises(ModelError, match="unknown task 'segmentation'"):
        validate_task("segmentation", CLS)
    with pytest.raises(ModelError, match="unknown task 'auto'"):
        validate_task("auto", CLS)
