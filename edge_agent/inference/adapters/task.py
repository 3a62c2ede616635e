"""Which post-processing a model needs, read from its output signature.

* four outputs with the TFLite_Detection_PostProcess shapes -> ``detection-ssd``
* one ``[1, 4+nc, N]`` / ``[1, N, 4+nc]`` output (or an end-to-end ``[1, N, 6]``)
  -> ``detection-yolo``
* one ``[C]`` / ``[1, C]`` output (any leading unit axes) -> ``classification``

Used when a model is loaded with ``task = "auto"`` and, through :func:`validate_task`,
to reject a model update whose outputs do not fit the configured task.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.common import (
    CLASSIFICATION,
    DETECTION_SSD,
    DETECTION_YOLO,
    TASKS,
)
from edge_agent.inference.adapters.ssd import is_ssd_signature, ssd_layout
from edge_agent.inference.adapters.yolo import yolo_family, yolo_shape
from edge_agent.inference.tensors import TensorSpec

_EXPECTED = {
    CLASSIFICATION: "one output [1, C]",
    DETECTION_SSD: "four outputs boxes [1, N, 4], classes [1, N], scores [1, N], count [1]",
    DETECTION_YOLO: "one output [1, 4+nc, N] or [1, N, 4+nc], or end-to-end [1, N, 6]",
}


def _signature(outputs: Sequence[TensorSpec]) -> str:
    """The outputs as ``name [1, 84, 8400] int8`` for messages."""
    if not outputs:
        return "no outputs"
    return ", ".join(
        f"{spec.name or '#' + str(spec.index)} {list(spec.shape)} {spec.dtype}" for spec in outputs
    )


def _fits_classification(outputs: Sequence[TensorSpec]) -> bool:
    """One output whose only non-unit axis is the last."""
    if len(outputs) != 1:
        return False
    shape = tuple(outputs[0].shape)
    return len(shape) >= 1 and shape[-1] >= 1 and all(d == 1 for d in shape[:-1])


def _fits_yolo(outputs: Sequence[TensorSpec]) -> bool:
    """One 3-D ``[1, a, b]`` output that reads as a YOLOv8 output with layout auto."""
    if len(outputs) != 1 or len(outputs[0].shape) != 3:
        return False
    try:
        yolo_shape(tuple(outputs[0].shape))
    except ModelError:
        return False
    return True


def _fits(task: str, outputs: Sequence[TensorSpec]) -> bool:
    """Whether the outputs fit one task."""
    if task == DETECTION_SSD:
        return len(outputs) == 4 and is_ssd_signature([tuple(o.shape) for o in outputs])
    if task == DETECTION_YOLO:
        return _fits_yolo(outputs)
    return _fits_classification(outputs)


def detect_task(outputs: Sequence[TensorSpec]) -> str:
    """Infer the task from a model's output tensors.

    Args:
        outputs: the model's output tensors.

    Returns:
        "classification", "detection-ssd" or "detection-yolo".

    Raises:
        ModelError: the outputs fit none of the tasks; the message lists the outputs.
    """
    for task in (DETECTION_SSD, DETECTION_YOLO, CLASSIFICATION):
        if _fits(task, outputs):
            return task
    raise ModelError(
        f"cannot tell the task from the model outputs ({_signature(outputs)}): expected "
        + "; or ".join(f"{_EXPECTED[t]} ({t})" for t in TASKS)
    )


def validate_task(task: str, outputs: Sequence[TensorSpec]) -> None:
    """Check that a configured task can post-process these outputs.

    Args:
        task: "classification", "detection-ssd" or "detection-yolo".
        outputs: the model's output tensors.

    Raises:
        ModelError: the task is unknown or the outputs do not fit it; the message names
            the task, what it needs and the outputs found.
    """
    if task not in TASKS:
        raise ModelError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if not _fits(task, outputs):
        raise ModelError(
            f"model outputs ({_signature(outputs)}) do not fit task {task}: "
            f"it needs {_EXPECTED[task]}"
        )


def model_family(
    task: str,
    outputs: Sequence[TensorSpec],
    input_size: tuple[int, int],
    end2end: bool | None = None,
) -> str:
    """The export family within a task, for reports and decoding (``end2end``: the
    export's own flag, when its metadata says).

    Returns:
        ``classification``; ``ssd-tf1`` (TF1 ``export_tflite_ssd_graph`` order) or
        ``ssd-tf2`` (TF2 Object Detection API and EfficientDet-Lite: scores, boxes,
        count, classes); ``yolov8`` (YOLOv8 and YOLO11), ``yolov5`` (objectness) or
        ``yolo-end2end`` (YOLOv10, YOLO26: the model's own detections).
    """
    if task == DETECTION_SSD:
        layout = ssd_layout(outputs)
        return "ssd-tf2" if layout.boxes != 0 else "ssd-tf1"
    if task == DETECTION_YOLO:
        return yolo_family(tuple(outputs[0].shape), input_size, end2end)
    return CLASSIFICATION


# Ultralytics tasks whose heads carry more than boxes and class scores.
_UNDECODED_EXPORTS = {
    "pose": "keypoints",
    "segment": "mask coefficients",
    "obb": "box angles",
}


def check_export_task(export_task: str | None) -> None:
    """Refuse an Ultralytics export whose head this project does not decode.

    A pose head ``[1, 4+1+51, N]`` would otherwise read as 52 class scores per
    candidate (a keypoint value taken for a score), and an oriented-box head's angle
    as one more class: a silently wrong answer.

    Raises:
        ModelError: the export's ``task`` is pose, segment or obb.
    """
    extra = _UNDECODED_EXPORTS.get(export_task or "")
    if extra is not None:
        raise ModelError(
            f"an Ultralytics {export_task} model: its outputs carry {extra}, which edge-agent "
            "does not decode; export a detect (or classify) model"
        )
