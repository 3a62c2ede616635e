"""Tier 2: Ultralytics exports from 8.3 on (metadata.json appended), end-to-end heads
(YOLOv10, YOLO26) and the heads edge-agent refuses (pose, segment, obb)."""

from __future__ import annotations

import io
import json
import zipfile

import cv2
import numpy as np
import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.codec import LABELS_MODEL, describe_model
from edge_agent.inference.model import ModelOptions
from tests.component.test_model_exports import CELL_BOX, CELL_INDEX, blob_image, load, raw_output
from tests.support.paths import fixture_model


def with_ultralytics_metadata(tmp_path, fixture: str, meta: dict) -> str:
    """A copy of a fixture with Ultralytics 8.3's metadata.json appended in a zip."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("metadata.json", json.dumps(meta))
    path = tmp_path / f"{meta.get('task', 'x')}_{fixture}"
    path.write_bytes(fixture_model(fixture).read_bytes() + out.getvalue())
    return str(path)


def test_end_to_end_head_gives_the_models_own_detections_with_its_names():
    path = fixture_model("yolo_end2end.tflite")
    model = load(path)
    codec = model.codec
    assert codec.decoder.family == "yolo-end2end"
    assert codec.labels_source == LABELS_MODEL and codec.metadata.end2end is True
    raw = raw_output(path, cv2.cvtColor(blob_image(), cv2.COLOR_BGR2RGB).astype(np.float32) / 255)
    assert raw.shape == (1, 64, 6) and raw[0, CELL_INDEX, 5] == 0.0  # class 0, red
    results = model.infer(blob_image()).results
    assert [(r.id, r.label, r.box) for r in results] == [(0, "crimson", CELL_BOX)]
    assert results[0].score == pytest.approx(float(raw[0, CELL_INDEX, 4]))
    described = describe_model(ModelOptions(path=str(path)))
    assert described["family"] == "yolo-end2end"


def test_a_v8_head_takes_its_names_from_metadata_json(tmp_path):
    meta = {"task": "detect", "end2end": False, "names": {"0": "red", "1": "green", "2": "blue"}}
    model = load(with_ultralytics_metadata(tmp_path, "yolo_pixel_boxes.tflite", meta))
    assert model.codec.decoder.family == "yolov8"
    assert model.codec.labels_source == LABELS_MODEL
    assert [(r.label, r.box) for r in model.infer(blob_image()).results] == [("red", CELL_BOX)]


@pytest.mark.parametrize("task", ["pose", "segment", "obb"])
def test_heads_that_are_not_decoded_are_refused_naming_the_file(tmp_path, task):
    meta = {"task": task, "names": {"0": "person"}, "kpt_shape": [17, 3]}
    path = with_ultralytics_metadata(tmp_path, "yolo_pixel_boxes.tflite", meta)
    with pytest.raises(ModelError, match=f"{path}: an Ultralytics {task} model"):
        load(path)


def test_a_v8_export_with_nms_true_is_end_to_end(tmp_path):
    """Ultralytics writes "end2end": false for v8/v11 heads even when exported with
    nms=True, whose output is the picked detections: args.nms decides."""
    meta = {"task": "detect", "end2end": False, "args": {"nms": True}, "names": {"0": "red"}}
    model = load(with_ultralytics_metadata(tmp_path, "yolo_end2end.tflite", meta))
    assert model.codec.decoder.family == "yolo-end2end"
    assert [(r.label, r.box) for r in model.infer(blob_image()).results] == [("red", CELL_BOX)]
