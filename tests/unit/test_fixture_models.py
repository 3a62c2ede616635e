"""The self-made models: generated deterministically, and computing exactly what
tests/fixtures/README.md and models/demo/README.md say, on both CPU runtimes."""

from __future__ import annotations

import importlib
import json
import sys

import cv2
import numpy as np
import pytest

from tests.support.paths import FIXTURE_MODELS, REPO, fixture_model

DEMO = REPO / "models" / "demo"
RUNTIMES = ["ai_edge_litert.interpreter", "tflite_runtime.interpreter"]
YOLO_IN = (0.01865844801068306, -14)
YOLO_OUT = (0.003986023832112551, -128)
# Colour logits of every model: 6 * (2 x_c - x_o1 - x_o2 - 2.5) for x in [-1, 1).
COLOR_W = 6.0 * (3.0 * np.eye(3) - 1.0)
COLOR_B = np.full(3, -15.0)
LABELS = ["red", "green", "blue"]


@pytest.fixture(params=RUNTIMES)
def interpreter_class(request):
    return pytest.importorskip(request.param).Interpreter


def _run(cls, name, image):
    """Run a model on one image; return (input details, outputs in reported order)."""
    interpreter = cls(model_path=str(fixture_model(name) if "/" not in name else name))
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], image[None])
    interpreter.invoke()
    return detail, [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def _round_half_away(num, den):
    """Integer division rounding half away from zero (TFLite's quantized average)."""
    num = np.asarray(num, np.int64)
    return np.where(num >= 0, (num + den // 2) // den, -((-num + den // 2) // den))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_generator_is_deterministic_and_committed_files_are_current():
    sys.path.insert(0, str(REPO / "models"))
    try:
        make_models = importlib.import_module("make_models")
    finally:
        sys.path.remove(str(REPO / "models"))
    for directory, build in (
        (FIXTURE_MODELS, make_models.fixture_files),
        (DEMO, make_models.demo_files),
    ):
        first, second = build(), build()
        assert first == second
        for name, content in first.items():
            assert (directory / name).read_bytes() == content, f"{name} is stale"
            if name.endswith(".tflite") and name != "not_a_model.tflite":
                assert content[4:8] == b"TFL3"
                assert len(content) < (130_000 if directory == DEMO else 8_000)


def test_labels_are_rgb_order():
    assert fixture_model("color_labels.txt").read_text().splitlines() == LABELS
    assert (DEMO / "labels.txt").read_text().splitlines() == LABELS


def _tie_images(dtype, rng, count=4):
    """Random images plus ones whose channel sums sit exactly on a .5 average."""
    info = np.iinfo(dtype)
    images = [rng.integers(info.min, info.max + 1, (32, 32, 3)).astype(dtype) for _ in range(4)]
    for target in rng.integers(-40, 40, (count, 3)):
        image = np.zeros((32, 32, 3), np.int64)
        for c, mean_x2 in enumerate(target):  # sum = (2 k + 1) * 512 -> mean k + 0.5
            total = (2 * int(mean_x2) + 1) * 512 + (128 * 1024 if dtype == np.uint8 else 0)
            base, extra = divmod(total, 1024)
            image[..., c] = base
            image.reshape(-1, 3)[:extra, c] += 1
        images.append(image.astype(dtype))
    return images


def test_color_uint8_is_the_channel_mean_rounded_half_up(interpreter_class):
    for image in _tie_images(np.uint8, np.random.default_rng(1)):
        detail, (scores,) = _run(interpreter_class, "color_uint8.tflite", image)
        assert detail["quantization"] == (0.0078125, 128)
        expected = _round_half_away(image.astype(np.int64).sum(axis=(0, 1)), 1024)
        assert scores.dtype == np.uint8 and scores.tolist() == [expected.tolist()]


def test_color_int8_is_the_channel_mean_rounded_half_away_from_zero(interpreter_class):
    images = _tie_images(np.int8, np.random.default_rng(2))
    images.append(np.full((32, 32, 3), -1, np.int8))
    images[-1][:512] = -2  # mean -1.5 -> -2
    for image in images:
        detail, (scores,) = _run(interpreter_class, "color_int8.tflite", image)
        assert detail["dtype"] == np.int8
        assert detail["quantization"] == pytest.approx(YOLO_IN)
        expected = _round_half_away(image.astype(np.int64).sum(axis=(0, 1)), 1024)
        assert scores.tolist() == [expected.tolist()]


def test_color_float_is_the_exact_channel_mean(interpreter_class):
    rng = np.random.default_rng(3)
    # Multiples of 1/256 in [-1, 1]: every partial sum is exact in float32.
    image = (rng.integers(-256, 257, (32, 32, 3)) / 256).astype(np.float32)
    detail, (scores,) = _run(interpreter_class, "color_float.tflite", image)
    assert detail["quantization"] == (0.0, 0)
    assert scores.dtype == np.float32
    assert scores.tolist() == [(image.astype(np.float64).sum(axis=(0, 1)) / 1024).tolist()]


def test_per_channel_input_reports_no_per_tensor_params(interpreter_class):
    interpreter = interpreter_class(model_path=str(fixture_model("per_channel_input.tflite")))
    detail = interpreter.get_input_details()[0]
    # The legacy field says "not quantized" although the uint8 input is quantized per channel.
    assert detail["quantization"] == (0.0, 0)
    params = detail["quantization_parameters"]
    assert params["scales"].tolist() == [1 / 128, 1 / 64, 1 / 32]
    assert params["zero_points"].tolist() == [128, 120, 100]
    assert params["quantized_dimension"] == 3
    # Both runtimes allocate and run it: only the caller can refuse it.
    image = np.full((32, 32, 3), 200, np.uint8)
    assert _run(interpreter_class, "per_channel_input.tflite", image)[1][0].tolist() == [[200] * 3]


@pytest.mark.parametrize("name", ["color_uint8_edgetpu.tflite", "orphan_edgetpu.tflite"])
def test_edgetpu_only_models_fail_on_cpu_like_compiled_ones(interpreter_class, name):
    interpreter = interpreter_class(model_path=str(fixture_model(name)))
    with pytest.raises(RuntimeError, match="Encountered unresolved custom op: edgetpu-custom-op"):
        interpreter.allocate_tensors()


def test_edgetpu_twin_naming_and_specs(interpreter_class):
    def specs(name):
        it = interpreter_class(model_path=str(fixture_model(name)))
        details = it.get_input_details() + it.get_output_details()
        return [(d["shape"].tolist(), d["dtype"], d["quantization"]) for d in details]

    assert specs("color_uint8_edgetpu.tflite") == specs("color_uint8.tflite")
    assert not (FIXTURE_MODELS / "orphan.tflite").exists()


def test_not_a_model_is_refused(interpreter_class):
    with pytest.raises(ValueError):
        interpreter_class(model_path=str(fixture_model("not_a_model.tflite")))


def _ssd_reference(image):
    """Expected (class, score, box) per detection of the 8x8-grid SSD fixtures."""
    sums = image.astype(np.int64).reshape(8, 8, 8, 8, 3).sum(axis=(1, 3))
    real = (_round_half_away(sums, 64) - 128) / 128.0
    probs = _sigmoid(real @ COLOR_W.T + COLOR_B)
    found = {}
    for r, c in zip(*np.nonzero(probs.max(axis=2) >= 0.5)):
        found[(r / 8, c / 8, (r + 1) / 8, (c + 1) / 8)] = (
            int(probs[r, c].argmax()),
            probs[r, c].max(),
        )
    return found


def _ssd_image():
    image = np.full((64, 64, 3), 128, np.uint8)
    image[8:24, 16:40] = (250, 10, 10)  # red: cells rows 1-2, columns 2-4 (6 cells)
    image[56:64, 0:8] = (0, 0, 255)  # blue: the bottom-left cell
    image[40:48, 48:56] = (0, 255, 0)  # green cell ...
    image[40:44, 48:56] = (128, 128, 128)  # ... half grey: mean too dull, no detection
    image[32:40, 56:64] = (255, 255, 0)  # yellow: not a class
    return image


@pytest.mark.parametrize(
    ("name", "order"),
    [
        ("ssd_postprocess.tflite", ("boxes", "classes", "scores", "count")),
        ("ssd_postprocess_tf2.tflite", ("scores", "boxes", "count", "classes")),
    ],
)
def test_ssd_detects_saturated_cells_exactly(interpreter_class, name, order):
    image = _ssd_image()
    detail, outputs = _run(interpreter_class, name, image)
    assert detail["quantization"] == (0.0078125, 128) and detail["shape"].tolist() == [1, 64, 64, 3]
    out = dict(zip(order, outputs))
    assert [out[k].shape for k in ("boxes", "classes", "scores", "count")] == [
        (1, 10, 4),
        (1, 10),
        (1, 10),
        (1,),
    ]
    expected = _ssd_reference(image)
    assert len(expected) == 7
    count = int(out["count"][0])
    assert count == 7  # slots past count hold garbage, not zeros
    got = {
        tuple(out["boxes"][0, i].tolist()): (int(out["classes"][0, i]), out["scores"][0, i])
        for i in range(count)
    }
    assert got.keys() == expected.keys()
    for box, (cls, score) in got.items():
        assert cls == expected[box][0]
        assert score == pytest.approx(expected[box][1], abs=1e-5)
    assert sorted(cls for cls, _ in got.values()) == [0] * 6 + [2]
    assert list(out["scores"][0, :count]) == sorted(out["scores"][0, :count], reverse=True)

    grey = np.full((64, 64, 3), 128, np.uint8)
    assert dict(zip(order, _run(interpreter_class, name, grey)[1]))["count"].tolist() == [0.0]


def test_ssd_output_names_follow_the_exports(interpreter_class):
    names = {}
    for name in ("ssd_postprocess.tflite", "ssd_postprocess_tf2.tflite"):
        it = interpreter_class(model_path=str(fixture_model(name)))
        names[name] = [d["name"] for d in it.get_output_details()]
    assert names["ssd_postprocess.tflite"] == ["TFLite_Detection_PostProcess"] + [
        f"TFLite_Detection_PostProcess:{i}" for i in (1, 2, 3)
    ]
    assert names["ssd_postprocess_tf2.tflite"] == [
        f"StatefulPartitionedCall:{i}" for i in (1, 3, 0, 2)
    ]


def test_yolo_tiny_has_yolov8_layout_and_exact_rows(interpreter_class):
    image = np.full((64, 64, 3), -14, np.int8)  # black: pixel / 255 = 0
    image[16:32, 8:16] = (-14, 40, -14)  # green (q 40 = 255/255): cells (2, 1) and (3, 1)
    image[0:8, 56:64] = (40, 40, 40)  # white: no class
    detail, (output,) = _run(interpreter_class, "yolo_tiny_int8.tflite", image)
    assert detail["quantization"] == pytest.approx(YOLO_IN)
    assert output.dtype == np.int8 and output.shape == (1, 7, 64)
    cell = np.arange(64)
    boxes = np.stack([(cell % 8 + 0.5) / 8, (cell // 8 + 0.5) / 8, [0.125] * 64, [0.125] * 64])
    expected_boxes = np.round(boxes / YOLO_OUT[0]) + YOLO_OUT[1]
    assert output[0, :4].tolist() == expected_boxes.astype(int).tolist()

    sums = image.astype(np.int64).reshape(8, 8, 8, 8, 3).sum(axis=(1, 3))
    real = (_round_half_away(sums, 64) - YOLO_IN[1]) * YOLO_IN[0]  # pixel / 255
    probs = _sigmoid((2 * real - 1) @ COLOR_W.T + COLOR_B).reshape(64, 3).T
    expected_scores = np.clip(np.round(probs / YOLO_OUT[0]) + YOLO_OUT[1], -128, 127)
    assert np.abs(output[0, 4:].astype(int) - expected_scores).max() <= 1
    hits = np.argwhere(output[0, 4:] > 0).tolist()
    assert hits == [[1, 17], [1, 25]]  # class green at cells 2*8+1 and 3*8+1


def test_yolo_tiny_signature_mimics_the_export(interpreter_class):
    it = interpreter_class(model_path=str(fixture_model("yolo_tiny_int8.tflite")))
    assert it.get_signature_list() == {
        "serving_default": {"inputs": ["images"], "outputs": ["output0"]}
    }
    assert it.get_output_details()[0]["name"] == "PartitionedCall:0"


@pytest.fixture(scope="module")
def clip_frames():
    capture = cv2.VideoCapture(str(DEMO / "clip.avi"))
    assert capture.isOpened()
    try:
        assert capture.get(cv2.CAP_PROP_FPS) == 15
        frames = []
        while len(frames) < 200:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    return frames


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_demo_detector_follows_the_squares_of_the_clip(interpreter_class, clip_frames):
    truth = json.loads((DEMO / "clip_truth.json").read_text())
    assert len(clip_frames) == len(truth["frames"]) == 150
    assert clip_frames[0].shape == (480, 640, 3)
    interpreter = interpreter_class(model_path=str(DEMO / "color_blobs.tflite"))
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    for number in range(0, 150, 3):
        rgb = cv2.cvtColor(clip_frames[number], cv2.COLOR_BGR2RGB)
        interpreter.set_tensor(
            index, cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA)[None]
        )
        interpreter.invoke()
        boxes, classes, scores, count = (interpreter.get_tensor(i)[0] for i in outputs)
        found = {}
        for i in range(int(count)):
            y0, x0, y1, x1 = boxes[i]
            found.setdefault(LABELS[int(classes[i])], []).append(
                (x0 * 640, y0 * 480, x1 * 640, y1 * 480)
            )
        assert sorted(found) == sorted(LABELS), f"frame {number}: {found}"  # never yellow
        for label in LABELS:
            assert len(found[label]) == 1, f"frame {number}: {found}"
            assert _iou(found[label][0], truth["frames"][number][label]) > 0.55, number
        assert scores[: int(count)].min() >= 0.5


def test_demo_scores_match_a_numpy_reference(interpreter_class):
    image = np.full((128, 128, 3), 40, np.uint8)
    image[20:50, 30:70] = (235, 20, 20)
    image[70:110, 75:100] = (20, 220, 20)
    _, (boxes, classes, scores, count) = _run(
        interpreter_class, str(DEMO / "color_blobs.tflite"), image
    )
    real = (image.astype(np.float64) - 128) / 128
    cells = _sigmoid(real @ COLOR_W.T + COLOR_B).reshape(16, 8, 16, 8, 3).mean(axis=(1, 3))
    padded = np.pad(cells, ((1, 1), (1, 1), (0, 0)))
    best = {}
    for kh in range(2, 7):
        for kw in range(2, 7):
            for i in range(17 - kh):
                for j in range(17 - kw):
                    inside = cells[i : i + kh, j : j + kw].mean(axis=(0, 1))
                    sides = [
                        padded[i, j + 1 : j + 1 + kw].mean(axis=0),
                        padded[i + kh + 1, j + 1 : j + 1 + kw].mean(axis=0),
                        padded[i + 1 : i + 1 + kh, j].mean(axis=0),
                        padded[i + 1 : i + 1 + kh, j + kw + 1].mean(axis=0),
                    ]
                    score = inside - np.max(sides, axis=0)
                    for c in range(3):
                        box = (i / 16, j / 16, (i + kh) / 16, (j + kw) / 16)
                        best[c] = max(best.get(c, (-9, None)), (score[c], box))
    assert int(count[0]) == 2
    for k in range(2):
        cls = int(classes[0, k])
        assert tuple(boxes[0, k].tolist()) == best[cls][1]
        assert scores[0, k] == pytest.approx(best[cls][0], abs=1e-5)
    assert sorted(classes[0, :2].tolist()) == [0.0, 1.0] and best[2][0] < 0.5
