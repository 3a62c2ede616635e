"""Model outputs -> results: the task adapters composed with labels and geometry.

The adapters are pure functions over arrays; this module picks the one for the task,
maps boxes back to frame pixels, attaches labels, and renders the JSON result objects
shared by ``edge-agent infer`` and the MQTT ``results`` topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from edge_agent.inference.adapters.classification import top_k
from edge_agent.inference.adapters.common import CLASSIFICATION
from edge_agent.inference.adapters.common import DETECTION_SSD as SSD
from edge_agent.inference.adapters.common import DETECTION_YOLO as YOLO
from edge_agent.inference.adapters.ssd import (
    decode_ssd,
    resolve_ssd_order,
    split_ssd,
    ssd_layout,
)
from edge_agent.inference.adapters.task import detect_task, model_family, validate_task
from edge_agent.inference.adapters.yolo import decode_yolo, yolo_shape
from edge_agent.inference.geometry import Fit, objects_to_image
from edge_agent.inference.labels import label_for, label_offset
from edge_agent.inference.tensors import TensorSpec


class DecodeSettings(NamedTuple):
    """Thresholds and limits of the adapters."""

    threshold: float = 0.5
    top_k: int = 5
    iou: float = 0.45
    max_detections: int = 100


class Result(NamedTuple):
    """One classification or detection, in frame pixels for boxes."""

    id: int
    label: str
    score: float
    box: tuple[float, float, float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        """The result object published and printed (``box`` only for detections)."""
        out: dict[str, Any] = {"id": self.id, "label": self.label, "score": round(self.score, 5)}
        if self.box is not None:
            out["box"] = [round(v, 1) for v in self.box]
        return out


def task_family(task: str) -> str:
    """ "classification" or "detection" (what ``infer`` and the results topic report)."""
    return CLASSIFICATION if task == CLASSIFICATION else "detection"


def default_resize(task: str) -> str:
    """YOLO models were trained on letterboxed inputs; the others are stretched."""
    return "letterbox" if task == YOLO else "stretch"


class Decoder:
    """Decodes one model's outputs.

    Args:
        outputs: the model's output specs.
        input_size: (width, height) of the model input.
        task: "auto" or an explicit task.
        labels: id -> label.
        settings: thresholds.
        labels_filter: keep only these labels (empty: all).
        ssd_num_classes: ``num_classes`` of the SSD post-processing op (its custom
            options), so SSD label files are realigned like classifiers' (0: unknown).
        end2end: an Ultralytics export's own ``end2end`` flag (None: not said).

    Raises:
        ModelError: the outputs do not fit the task (or no task can be detected).
    """

    def __init__(
        self,
        outputs: Sequence[TensorSpec],
        input_size: tuple[int, int],
        *,
        task: str = "auto",
        labels: dict[int, str] | None = None,
        settings: DecodeSettings | None = None,
        labels_filter: Sequence[str] = (),
        ssd_num_classes: int = 0,
        end2end: bool | None = None,
    ):
        self.outputs = list(outputs)
        self.task = detect_task(self.outputs) if task == "auto" else task
        validate_task(self.task, self.outputs)
        self.input_size = input_size
        self.family = model_family(self.task, self.outputs, input_size, end2end)
        self._ssd_num_classes = ssd_num_classes
        self.labels = labels or {}
        self.settings = settings or DecodeSettings()
        self.labels_filter = frozenset(labels_filter)
        self._ssd = ssd_layout(self.outputs) if self.task == SSD else None
        self.num_classes = self._num_classes()
        # Label files off by one background entry are realigned (see label_offset). Only
        # a classifier can score a background class the file leaves out (-1); detectors
        # never output one, so for them only a background line in the file (+1) is.
        offset = label_offset(self.labels, self.num_classes or 0)
        self.label_offset = offset if offset >= 0 or self.task == CLASSIFICATION else 0

    def _num_classes(self) -> int | None:
        """How many classes the model scores (SSD: from the op's options, when known)."""
        if self.task == CLASSIFICATION:
            return int(np.prod(self.outputs[0].shape))
        if self.task == YOLO:  # 0 for an end-to-end head: its shape does not say
            shape = yolo_shape(
                self.outputs[0].shape, family=self.family, input_size=self.input_size
            )
            return shape.num_classes or None
        return self._ssd_num_classes or None

    def label(self, class_id: int) -> str:
        """The label of a class id (its number when the file has none)."""
        return label_for(self.labels, class_id, self.label_offset)

    def __call__(self, arrays: Sequence[np.ndarray], fit: Fit) -> list[Result]:
        """Turn output arrays into results sorted by score (boxes in frame pixels)."""
        s = self.settings
        if self.task == CLASSIFICATION:
            classes = top_k(arrays[0].reshape(-1), self.outputs[0].quant, s.top_k, s.threshold)
            results = [Result(c.id, self.label(c.id), float(c.score)) for c in classes]
        else:
            if self.task == SSD:
                if not self._ssd.certain:  # classes vs scores: settled by the first detections
                    self._ssd = resolve_ssd_order(arrays, self._ssd)
                lay = self._ssd
                objs = decode_ssd(*split_ssd(arrays, lay), s.threshold, self.input_size)
                if s.max_detections > 0:  # 0 means no limit, as for top_k
                    objs = objs[: s.max_detections]
            else:
                objs = decode_yolo(
                    arrays[0],
                    self.outputs[0].quant,
                    s.threshold,
                    s.iou,
                    s.max_detections,
                    self.input_size,
                    family=self.family,
                )
            results = [
                Result(o.id, self.label(o.id), float(o.score), tuple(o.bbox))
                for o in objects_to_image(objs, fit)
            ]
        if self.labels_filter:
            results = [r for r in results if r.label in self.labels_filter]
        results.sort(key=lambda r: (-r.score, r.id))
        return results
