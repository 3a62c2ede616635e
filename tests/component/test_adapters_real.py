"""Tier 2: the adapters on real model outputs, against the reference in shared/README.md
and the exact arithmetic of the SSD fixture models (tests/fixtures/README.md).

The preprocessing is written inline (letterbox with plan_fit, pad 114, RGB, pixels/255
quantized with the input's scale/zero point) so that these tests depend only on the
adapters, geometry and labels.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.classification import top_k
from edge_agent.inference.adapters.common import (
    CLASSIFICATION,
    DETECTION_SSD,
    DETECTION_YOLO,
    BBox,
)
from edge_agent.inference.adapters.ssd import decode_ssd, resolve_ssd_order, split_ssd, ssd_layout
from edge_agent.inference.adapters.task import detect_task, validate_task
from edge_agent.inference.adapters.yolo import decode_yolo
from edge_agent.inference.geometry import objects_to_image, plan_fit
from edge_agent.inference.labels import label_count_warning, label_for, read_labels
from edge_agent.inference.tensors import NOT_QUANTIZED, QuantParams, TensorSpec, dequantize
from tests.support.paths import fixture_model, shared_file

# shared/README.md: "What a correct pipeline gives on them" (x0, y0, x1, y1 image pixels).
YOLO_EXPECTED = {
    "grace_hopper.bmp": [("person", 0.92, (0, 23, 511, 599)), ("tie", 0.55, (223, 409, 292, 476))],
    "pets.jpg": [("dog", 0.96, (348, 167, 497, 367)), ("dog", 0.92, (108, 17, 263, 297))],
    "cat.bmp": [("cat", 0.93, (55, 35, 365, 337))],
}


class Loaded:
    """An interpreter with its tensors described as the adapters see them."""

    def __init__(self, path):
        self.interpreter = Interpreter(model_path=str(path), num_threads=2)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = [
            TensorSpec(
                d["index"],
                d["name"],
                tuple(int(x) for x in d["shape"]),
                np.dtype(d["dtype"]),
                QuantParams(float(d["quantization"][0]), int(d["quantization"][1])),
            )
            for d in self.interpreter.get_output_details()
        ]

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(o.index).copy() for o in self.outputs]


@pytest.fixture(scope="module")
def yolo():
    return Loaded(shared_file("models/yolov8n_full_integer_quant.tflite"))


@pytest.fixture(scope="module")
def yolo_labels():
    return read_labels(shared_file("models/yolov8n_labels.txt"))


def letterbox_input(image_bgr: np.ndarray, loaded: Loaded):
    """Ultralytics-style letterbox into the model input, quantized; returns (tensor, fit)."""
    _, dst_h, dst_w, _ = loaded.input["shape"]
    h, w = image_bgr.shape[:2]
    fit = plan_fit(w, h, int(dst_w), int(dst_h), "letterbox")
    canvas = np.full((dst_h, dst_w, 3), 114, np.uint8)
    resized = cv2.resize(image_bgr, (fit.new_w, fit.new_h), interpolation=cv2.INTER_LINEAR)
    canvas[fit.pad_y : fit.pad_y + fit.new_h, fit.pad_x : fit.pad_x + fit.new_w] = resized[
        ..., ::-1
    ]
    scale, zero_point = loaded.input["quantization"]
    info = np.iinfo(loaded.input["dtype"])
    q = np.round(canvas.astype(np.float64) / 255.0 / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(loaded.input["dtype"])[None], fit


def detect(yolo: Loaded, image: str):
    """Run the YOLO model on a shared image: (raw output, fit, objects in image pixels)."""
    bgr = cv2.imread(str(shared_file(f"images/{image}")))
    assert bgr is not None, image
    tensor, fit = letterbox_input(bgr, yolo)
    raw = yolo.run(tensor)[0]
    _, in_h, in_w, _ = yolo.input["shape"]
    objs = decode_yolo(raw, yolo.outputs[0].quant, 0.25, 0.45, 100, (int(in_w), int(in_h)))
    return raw, fit, objects_to_image(objs, fit)


@pytest.mark.parametrize("image", sorted(YOLO_EXPECTED))
def test_yolo_matches_the_reference(yolo, yolo_labels, image):
    _, fit, objects = detect(yolo, image)
    assert all(0 <= o.bbox.xmin <= o.bbox.xmax <= fit.src_w for o in objects)
    assert all(0 <= o.bbox.ymin <= o.bbox.ymax <= fit.src_h for o in objects)
    assert [o.score for o in objects] == sorted((o.score for o in objects), reverse=True)
    for label, score, box in YOLO_EXPECTED[image]:
        same = [o for o in objects if label_for(yolo_labels, o.id) == label]
        best = max(same, key=lambda o: o.bbox.iou(BBox(*box)), default=None)
        assert best is not None, f"{image}: no {label} among {objects}"
        assert best.bbox.iou(BBox(*box)) >= 0.85, (image, label, best)
        assert abs(best.score - score) <= 0.05, (image, label, best)


def test_yolo_grace_hopper_finds_exactly_person_and_tie(yolo, yolo_labels):
    _, _, objects = detect(yolo, "grace_hopper.bmp")
    assert [label_for(yolo_labels, o.id) for o in objects] == ["person", "tie"]


def test_yolo_integer_path_equals_the_float_path_on_a_real_output(yolo):
    raw, _, _ = detect(yolo, "pets.jpg")
    quant = yolo.outputs[0].quant
    for threshold in (0.05, 0.25, 0.5):
        as_int = decode_yolo(raw, quant, threshold, 0.45, 300, (640, 640))
        as_float = decode_yolo(
            dequantize(raw, quant), NOT_QUANTIZED, threshold, 0.45, 300, (640, 640)
        )
        assert as_int == as_float
        assert as_int  # the dogs are there at every threshold
    transposed = np.ascontiguousarray(raw.transpose(0, 2, 1))
    assert decode_yolo(transposed, quant, 0.25, 0.45, 300, (640, 640)) == decode_yolo(
        raw, quant, 0.25, 0.45, 300, (640, 640)
    )


def test_yolo_signature_and_labels(yolo, yolo_labels):
    assert detect_task(yolo.outputs) == DETECTION_YOLO
    with pytest.raises(ModelError, match="do not fit task classification"):
        validate_task(CLASSIFICATION, yolo.outputs)
    assert len(yolo_labels) == 80
    assert label_count_warning(yolo_labels, 80) is None


def test_mobilenet_classification_matches_the_reference():
    model = Loaded(shared_file("models/mobilenet_v2_1.0_224_quant.tflite"))
    labels = read_labels(shared_file("models/imagenet_labels.txt"))
    assert detect_task(model.outputs) == CLASSIFICATION
    num_classes = model.outputs[0].shape[-1]
    assert label_count_warning(labels, num_classes) is None  # 1001 incl. background
    _, h, w, _ = model.input["shape"]
    for image, expected in (
        ("cat.bmp", [("Egyptian cat", 0.777), ("tabby, tabby cat", 0.133)]),
        ("grace_hopper.bmp", [("military uniform", 0.934)]),
    ):
        bgr = cv2.imread(str(shared_file(f"images/{image}")))
        rgb = cv2.cvtColor(
            cv2.resize(bgr, (int(w), int(h)), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
        )
        raw = model.run(rgb[None])[0]
        classes = top_k(raw, model.outputs[0].quant, len(expected), 0.05)
        assert [label_for(labels, c.id) for c in classes] == [name for name, _ in expected]
        for c, (_, score) in zip(classes, expected):
            assert abs(c.score - score) <= 0.05, (image, c)


def test_real_label_files():
    coco = read_labels(shared_file("models/coco_labels.txt"))
    assert len(coco) == 90 and coco[0] == "person" and coco[11] == "n/a"
    assert coco[12] == "stop sign"  # ids stay aligned across the n/a gaps
    imagenet = read_labels(shared_file("models/imagenet_labels.txt"))
    assert imagenet[0] == "background" and len(imagenet) == 1001
    assert label_count_warning(imagenet, 80) is not None


@pytest.mark.parametrize("name", ["ssd_postprocess.tflite", "ssd_postprocess_tf2.tflite"])
def test_ssd_order_and_decode_on_the_postprocess_op(name):
    # The fixture detects 8x8 cells of saturated primaries (tests/fixtures/README.md).
    model = Loaded(fixture_model(name))
    assert detect_task(model.outputs) == DETECTION_SSD
    layout = ssd_layout(model.outputs)
    assert layout.certain  # both exports' names settle classes vs scores
    image = np.full((1, 64, 64, 3), 128, np.uint8)
    image[0, 16:24, 24:32] = (255, 0, 0)  # red at row 2, col 3
    image[0, 40:48, 48:56] = (0, 0, 255)  # blue at row 5, col 6
    image[0, 56:64, 0:8] = (0, 255, 0)  # green at row 7, col 0
    tensors = model.run(image)
    # Without names, the values of this frame alone decide the same layout.
    assert resolve_ssd_order(tensors) == layout
    objects = decode_ssd(*split_ssd(tensors, layout), 0.5, (64, 64))
    assert sorted((o.id, tuple(o.bbox)) for o in objects) == [
        (0, (24.0, 16.0, 32.0, 24.0)),
        (1, (0.0, 56.0, 8.0, 64.0)),
        (2, (48.0, 40.0, 56.0, 48.0)),
    ]
    assert all(o.score == pytest.approx(0.99986, abs=1e-4) for o in objects)
