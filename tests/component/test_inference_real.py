"""Tier 2: the whole in-process inference path on real models and photos."""

import cv2
import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.common import BBox
from edge_agent.inference.model import LoadedModel, ModelOptions
from edge_agent.inference.postprocess import DecodeSettings
from tests.support.paths import shared_file


def load(model, labels, device="cpu", threshold=0.25, top_k=5):
    return LoadedModel.load(
        ModelOptions(
            path=str(shared_file(f"models/{model}")),
            labels=str(shared_file(f"models/{labels}")),
            device=device,
            num_threads=2,
            settings=DecodeSettings(threshold=threshold, top_k=top_k, iou=0.45),
        )
    )


def image(name):
    return cv2.imread(str(shared_file(f"images/{name}")))


@pytest.mark.parametrize(
    "img, label, score",
    [
        ("cat.bmp", "Egyptian cat", 0.777),
        ("grace_hopper.bmp", "military uniform", 0.934),
    ],
)
def test_mobilenet_v2_top1(img, label, score):
    model = load("mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt", threshold=0.1)
    out = model.infer(image(img))
    assert out.backend == "cpu" and out.task == "classification"
    assert out.results[0].label == label
    assert out.results[0].score == pytest.approx(score, abs=0.02)


def test_mobilenet_v2_cat_runner_up():
    model = load("mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt", threshold=0.1)
    results = model.infer(image("cat.bmp")).results
    assert [r.label for r in results[:2]] == ["Egyptian cat", "tabby, tabby cat"]
    assert results[1].score == pytest.approx(0.133, abs=0.02)


YOLO_EXPECTED = {
    "grace_hopper.bmp": [("person", 0.92, (0, 23, 511, 599)), ("tie", 0.55, (223, 409, 292, 476))],
    "pets.jpg": [("dog", 0.96, (348, 167, 497, 367)), ("dog", 0.92, (108, 17, 263, 297))],
    "cat.bmp": [("cat", 0.93, (55, 35, 365, 337))],
}


@pytest.mark.parametrize("img", sorted(YOLO_EXPECTED))
def test_yolov8n_int8_boxes_match_reference(img):
    model = load("yolov8n_full_integer_quant.tflite", "yolov8n_labels.txt")
    # int8 input with zero point -14: the LUT must not be an identity.
    assert not model.codec.preprocessor.lut.identity
    assert model.codec.preprocessor.resize == "letterbox"
    results = model.infer(image(img)).results
    for label, score, box in YOLO_EXPECTED[img]:
        best = max(
            (r for r in results if r.label == label), key=lambda r: BBox(*r.box).iou(BBox(*box))
        )
        assert BBox(*best.box).iou(BBox(*box)) >= 0.85, (label, best)
        assert best.score == pytest.approx(score, abs=0.05)


@pytest.mark.parametrize(
    "tpu_model, cpu_model, img",
    [
        (
            "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
            "mobilenet_v1_0.25_128_quant.tflite",
            "cat.bmp",
        ),
        (
            "yolov8n_full_integer_quant_edgetpu.tflite",
            "yolov8n_full_integer_quant.tflite",
            "pets.jpg",
        ),
    ],
)
def test_edgetpu_twin_falls_back_to_cpu_with_same_results(tpu_model, cpu_model, img):
    labels = "yolov8n_labels.txt" if "yolo" in cpu_model else "imagenet_labels.txt"
    via_tpu = load(tpu_model, labels, device="auto", threshold=0.1)
    direct = load(cpu_model, labels, device="cpu", threshold=0.1)
    a, b = via_tpu.infer(image(img)), direct.infer(image(img))
    assert a.backend == "cpu"
    assert a.model_path.endswith(cpu_model)  # the file that actually ran
    assert [(r.id, r.score, r.box) for r in a.results] == [
        (r.id, r.score, r.box) for r in b.results
    ]
    assert a.results
    reasons = dict(via_tpu.engine.attempts)
    assert "no Edge TPU" in reasons["edgetpu"]


def test_model_invoking_error_is_a_clean_error():
    with pytest.raises(ModelError, match="unresolved custom op: fake-op-double"):
        LoadedModel.load(
            ModelOptions(path=str(shared_file("models/model_invoking_error.tflite")), device="cpu")
        )
