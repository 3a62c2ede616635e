"""Tier 2: every common export gives the reference answer (issue: SSD labelmaps, input
normalization, YOLO families, labels inside the model), on the self-made fixtures
(tests/fixtures/README.md) and the real files in ../shared."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from edge_agent.inference.adapters.yolo import decode_yolo
from edge_agent.inference.codec import (
    LABELS_FILE,
    LABELS_MODEL,
    LABELS_NONE,
    describe_model,
    describe_text,
)
from edge_agent.inference.model import LoadedModel, ModelOptions
from edge_agent.inference.normalization import NormSource
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.inference.tensors import NOT_QUANTIZED
from tests.support import reexport
from tests.support.paths import fixture_model, shared_file

ALL = DecodeSettings(threshold=0.25, top_k=0, max_detections=0)
CELL_BOX = (16.0, 8.0, 24.0, 16.0)  # cell row 1, column 2 of the 8x8 grid on 64x64
CELL_INDEX = 1 * 8 + 2


def load(path, labels="", settings=ALL, **kw):
    return LoadedModel.load(
        ModelOptions(path=str(path), labels=str(labels), settings=settings, **kw)
    )


def blob_image(size=64):
    """Black, with one pure red 8x8 cell at row 1, column 2 (BGR)."""
    image = np.zeros((size, size, 3), np.uint8)
    image[8:16, 16:24] = (0, 0, 255)
    return image


def raw_output(path, image_rgb01):
    """The float model's first output for a float [0, 1] RGB image."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image_rgb01[None])
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("name", ["ssd_postprocess.tflite", "ssd_postprocess_tf2.tflite"])
def test_ssd_labelmap_with_background_line_is_realigned(name):
    model = load(fixture_model(name), fixture_model("ssd_labelmap.txt"))
    decoder = model.codec.decoder
    assert (decoder.num_classes, decoder.label_offset) == (3, 1)  # num_classes from options
    assert model.codec.warnings == ()
    results = model.infer(blob_image()).results
    assert [(r.id, r.label, r.box) for r in results] == [(0, "red", CELL_BOX)]
    options = ModelOptions(
        path=str(fixture_model(name)), labels=str(fixture_model("ssd_labelmap.txt"))
    )
    described = describe_model(options)
    assert described["ssd_options"]["max_detections"] == 10
    assert describe_text(described).endswith(
        "labels: file (4); SSD op: 3 classes, at most 10 detections, scores >= 0.5"
    )


ONE_BASED = {
    "label_map.pbtxt": 'item {\n  name: "/m/r"\n  id: 1\n  display_name: "red"\n}\n'
    "# green and blue\nitem { id: 2 name: 'green' }\nitem { name: \"blue\" id: 3 }\n",
    "one_based.txt": "1 red\n2 green\n3 blue\n",
}


@pytest.mark.parametrize("name", ["ssd_postprocess.tflite", "ssd_postprocess_tf2.tflite"])
@pytest.mark.parametrize("labels", sorted(ONE_BASED))
def test_ssd_one_based_label_map_meets_the_zero_based_classes(name, labels, tmp_path):
    # TF OD API ids start at 1 (0 is the background); the SSD op's classes start at 0.
    path = tmp_path / labels
    path.write_text(ONE_BASED[labels])
    model = load(fixture_model(name), path)
    assert model.codec.decoder.label_offset == 1 and model.codec.warnings == ()
    results = model.infer(blob_image()).results
    assert [(r.id, r.label) for r in results] == [(0, "red")]


def test_ssd_takes_its_labels_from_object_detector_metadata():
    # Model Maker's EfficientDet-Lite (TFLite Support's object detector writer) names its
    # label file as the classes output's TENSOR_VALUE_LABELS, not TENSOR_AXIS_LABELS.
    model = load(fixture_model("ssd_tf2_metadata.tflite"))
    assert (model.codec.labels_source, model.codec.warnings) == (LABELS_MODEL, ())
    assert model.codec.metadata.labels_file == "labelmap.txt"
    results = model.infer(blob_image()).results
    assert [(r.id, r.label, r.box) for r in results] == [(0, "crimson", CELL_BOX)]


@pytest.mark.parametrize("float_input", [False, True])
def test_a_model_without_its_label_file_keeps_its_other_facts(tmp_path, float_input):
    # The metadata names labelmap.txt, but the appended archive is gone (a tool rewrote
    # the flatbuffer, here giving it the converter's float input): only the label file is
    # missing from what the model says.
    model = reexport.read(fixture_model("ssd_tf2_metadata.tflite").read_bytes())
    if float_input:
        reexport.requantized_input(model, schema.TensorType.FLOAT32)
    path = tmp_path / "no_archive.tflite"
    path.write_bytes(reexport.write(model))
    model = load(path, fixture_model("ssd_labelmap.txt"))
    codec = model.codec
    (warning,) = codec.warnings
    assert "metadata names label file 'labelmap.txt'" in warning
    assert codec.normalization.source is NormSource.METADATA
    assert (codec.decoder.num_classes, codec.decoder.label_offset) == (3, 1)  # the SSD op's
    results = model.infer(blob_image()).results
    assert [(r.id, r.label, r.box) for r in results] == [(0, "red", CELL_BOX)]


def test_a_model_with_unreadable_metadata_keeps_what_its_graph_says(tmp_path):
    # A TFLITE_METADATA buffer that is no metadata flatbuffer: the SSD op's options (its
    # class count) are in the graph, not in the metadata, and still hold.
    data = fixture_model("ssd_tf2_metadata.tflite").read_bytes()
    path = tmp_path / "bad_metadata.tflite"
    path.write_bytes(data.replace(b"M001", b"M00?", 1))
    model = load(path, fixture_model("ssd_labelmap.txt"))
    (warning,) = model.codec.warnings
    assert warning.startswith("ignoring the model's metadata: ") and "M001" in warning
    assert (model.codec.decoder.num_classes, model.codec.decoder.label_offset) == (3, 1)
    results = model.infer(blob_image()).results
    assert [(r.id, r.label, r.box) for r in results] == [(0, "red", CELL_BOX)]


def test_metadata_classifier_normalization_and_embedded_labels():
    model = load(fixture_model("color_float_metadata.tflite"), settings=DecodeSettings(-1.0, 0))
    codec = model.codec
    assert codec.labels_source == LABELS_MODEL
    assert codec.normalization.source is NormSource.METADATA
    assert codec.normalization.norm.mean == (127.5,) * 3
    # RGB (255, 0, 255): (p - 127.5) / 127.5 is exactly 1, -1, 1.
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = image[..., 2] = 255
    results = model.infer(image).results
    assert [(r.id, r.label, r.score) for r in results] == [
        (0, "crimson", 1.0),
        (2, "azure", 1.0),
        (1, "lime", -1.0),
    ]
    # A configured label file wins over the embedded one.
    model = load(fixture_model("color_float_metadata.tflite"), fixture_model("color_labels.txt"))
    assert model.codec.labels_source == LABELS_FILE
    assert model.codec.decoder.label(0) == "red"


def test_yolov5_objectness_head_scores_are_objectness_times_class():
    path = fixture_model("yolov5_objectness.tflite")
    model = load(path)
    assert model.codec.decoder.family == "yolov5"
    assert model.codec.labels_source == LABELS_NONE
    results = model.infer(blob_image()).results
    raw = raw_output(path, cv2.cvtColor(blob_image(), cv2.COLOR_BGR2RGB).astype(np.float32) / 255)
    assert raw.shape == (1, 252, 8) and raw[0, CELL_INDEX, 4] == np.float32(0.5)
    expected = float(np.float32(0.5) * raw[0, CELL_INDEX, 5])
    assert [(r.id, r.score, r.box) for r in results] == [(0, expected, CELL_BOX)]
    # Read as a YOLOv8 head, the objectness column would be class 0: a different answer.
    as_v8 = decode_yolo(raw, NOT_QUANTIZED, 0.25, 0.45, 0, (64, 64), family="yolov8")
    assert [(o.id, o.score) for o in as_v8] != [(0, expected)]


def test_pixel_box_head():
    path = fixture_model("yolo_pixel_boxes.tflite")
    model = load(path)
    assert model.codec.decoder.family == "yolov8"
    results = model.infer(blob_image()).results
    raw = raw_output(path, cv2.cvtColor(blob_image(), cv2.COLOR_BGR2RGB).astype(np.float32) / 255)
    assert [(r.id, r.score, r.box) for r in results] == [
        (0, float(raw[0, 4, CELL_INDEX]), CELL_BOX)
    ]


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("ssd_postprocess.tflite", "ssd-tf1"),
        ("ssd_postprocess_tf2.tflite", "ssd-tf2"),
        ("yolo_tiny_int8.tflite", "yolov8"),
        ("yolo_pixel_boxes.tflite", "yolov8"),
        ("yolov5_objectness.tflite", "yolov5"),
        ("color_uint8.tflite", "classification"),
    ],
)
def test_families_are_told_apart(name, family):
    assert load(fixture_model(name)).codec.decoder.family == family


def test_mobilenet_edgetpu_gives_googles_answer_and_its_twin_falls_back_identically():
    labels = shared_file("models/imagenet_labels.txt")
    image = cv2.imread(str(shared_file("images/cat.bmp")))
    settings = DecodeSettings(threshold=0.0, top_k=3)
    cpu = load(
        shared_file("models/mobilenet_edgetpu_0.75_224_post_training_quant.tflite"),
        labels,
        settings,
    )
    assert cpu.codec.normalization.source is NormSource.GUESS
    first = cpu.infer(image).results
    assert (first[0].id, first[0].label) == (286, "Egyptian cat")
    assert first[0].score == pytest.approx(0.355, abs=0.002)
    twin_path = shared_file("models/mobilenet_edgetpu_0.75_224_post_training_quant_edgetpu.tflite")
    twin = load(twin_path, labels, settings)
    out = twin.infer(image)
    assert out.backend == "cpu" and out.model_path == cpu.engine.model_path
    assert out.results == first


def ultralytics_letterbox(image, size, scale, zero_point):
    """Ultralytics' documented LetterBox, then pixels / 255 quantized to the int8 input."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(
        image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114)
    )
    rgb = image[..., ::-1].astype(np.float64) / 255.0
    return np.clip(np.round(rgb / scale + zero_point), -128, 127).astype(np.int8)


@pytest.mark.parametrize(
    "photo", ["pets.jpg", "grace_hopper.bmp", "cat_720p.jpg", "cat.bmp", "noise-1001x777"]
)
def test_yolov8n_letterbox_equals_ultralytics_byte_for_byte(photo):
    model = load(shared_file("models/yolov8n_full_integer_quant.tflite"))
    if photo.startswith("noise"):
        # A shrink by a non-integer factor (0.639): INTER_AREA and INTER_LINEAR differ
        # (an exact 2x shrink, like cat_720p's, gives the same pixels with both).
        image = np.random.default_rng(11).integers(0, 256, (777, 1001, 3), dtype=np.uint8)
    else:
        image = cv2.imread(str(shared_file(f"images/{photo}")))
    spec = model.engine.session.input
    tensor = np.zeros(spec.shape, spec.dtype)
    model.codec.preprocessor(image, tensor)
    reference = ultralytics_letterbox(image, 640, spec.quant.scale, spec.quant.zero_point)
    assert tensor[0].tobytes() == reference.tobytes()


def test_yolov8n_labels_come_from_its_metadata():
    model = load(shared_file("models/yolov8n_full_integer_quant.tflite"))
    assert model.codec.labels_source == LABELS_MODEL
    results = model.infer(cv2.imread(str(shared_file("images/pets.jpg")))).results
    assert [r.label for r in results[:2]] == ["dog", "dog"]


def test_check_config_reports_what_the_model_will_get(tmp_path):
    model = shared_file("models/mobilenet_edgetpu_0.75_224_post_training_quant_edgetpu.tflite")
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\npath = "{model}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"model {model}: classification (classification), stretch;")
    assert "assumed [-1, 1] (mean 127, std 128)" in first and "labels: none (0)" in first
    yolo = shared_file("models/yolov8n_full_integer_quant.tflite")
    config.write_text(f'[model]\npath = "{yolo}"\nlabels = "{fixture_model("color_labels.txt")}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "check-config", "--strict", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # 3 labels for 80 classes: a warning, so --strict fails.
    assert proc.returncode == 1 and "3 entries but the model has 80 classes" in proc.stderr
    assert "detection-yolo (yolov8), letterbox" in proc.stdout


def test_detectors_never_shift_labels_down(tmp_path):
    # Two names for three SSD classes: a classifier would read "background left out" (-1);
    # a detector has no background output, so nothing shifts and the user is told.
    short = tmp_path / "two.txt"
    short.write_text("red\ngreen\n")
    model = load(fixture_model("ssd_postprocess.tflite"), short)
    assert model.codec.decoder.label_offset == 0
    assert any("off by one" in w for w in model.codec.warnings)
    assert [r.label for r in model.infer(blob_image()).results] == ["red"]
