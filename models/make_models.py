"""Generate the self-made TFLite models: the test fixtures and the demo detector and clip.

Usage::

    python models/make_models.py               # everything
    python models/make_models.py --fixtures-only
    python models/make_models.py --demo-only
    python models/make_models.py --check       # exit 1 if a committed model is stale

The models are written with the flatbuffer schema that ai_edge_litert ships; every byte
is deterministic, so re-running changes nothing. tests/fixtures/README.md documents each
fixture's exact arithmetic; models/demo/README.md the demo.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

# Run as a script, models/ is already sys.path[0]; imported (by the tests), it is added.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import color_blobs  # noqa: E402
import export_families  # noqa: E402
from color_blobs import CORAL_INPUT, LABELS  # noqa: E402
from tflite_builder import (  # noqa: E402
    BuiltinOperator,
    ModelBuilder,
    Quant,
    concatenation,
    conv2d_1x1,
    pool2d,
    reshape,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO / "tests" / "fixtures" / "models"
DEMO_DIR = REPO / "models" / "demo"

# The exact float32 input/output parameters of Ultralytics' YOLOv8n full-int8 export.
YOLO_INPUT = Quant.per_tensor(0.01865844801068306, -14)
YOLO_OUTPUT = Quant.per_tensor(0.003986023832112551, -128)
COLOR_SIZE = 32
SSD_SIZE, SSD_CELL = 64, 8
SSD_MAX_DETECTIONS = 10
SSD_SCORE_THRESHOLD = 0.5
SSD_IOU_THRESHOLD = 0.5
EDGETPU_OP = "edgetpu-custom-op"
NOT_A_MODEL = b"edge-agent fixture: these bytes are not a TFLite flatbuffer\n"
FAILS_ON_INPUT_SCORES = (192, 64, 32)  # uint8, scale 1/256: 0.75, 0.25, 0.125


def build_color_classifier(dtype: type, quant: Quant | None, description: str) -> bytes:
    """A 3-class "classifier" whose scores are the channel means of a 32x32 RGB image.

    AVERAGE_POOL_2D over the whole image, then RESHAPE to [1, 3]; quantized models keep
    the input's quantization on the output (the pool kernels require it).
    """
    b = ModelBuilder(description)
    image = b.tensor("image", [1, COLOR_SIZE, COLOR_SIZE, 3], dtype, quant)
    pooled = b.tensor("channel_mean", [1, 1, 1, 3], dtype, quant)
    scores = b.tensor("scores", [1, 3], dtype, quant)
    whole = (COLOR_SIZE, COLOR_SIZE)
    version = 2 if dtype is np.int8 else 1
    b.builtin(BuiltinOperator.AVERAGE_POOL_2D, [image], [pooled], pool2d(whole, whole), version)
    shape = b.constant("scores_shape", np.array([1, 3], np.int32))
    b.builtin(BuiltinOperator.RESHAPE, [pooled, shape], [scores], reshape([1, 3]))
    return b.build([image], [scores])


def build_per_channel_input() -> bytes:
    """The colour classifier with per-channel (axis 3) quantization on its uint8 input."""
    b = ModelBuilder("edge-agent fixture: per-channel quantized input (must be refused)")
    per_channel = Quant((1 / 128, 1 / 64, 1 / 32), (128, 120, 100), axis=3)
    image = b.tensor("image", [1, COLOR_SIZE, COLOR_SIZE, 3], np.uint8, per_channel)
    pooled = b.tensor("channel_mean", [1, 1, 1, 3], np.uint8, per_channel)
    # The channel axis of a [1, 3] tensor is 1; axis 3 would fail to load.
    scores = b.tensor("scores", [1, 3], np.uint8, per_channel._replace(axis=1))
    whole = (COLOR_SIZE, COLOR_SIZE)
    b.builtin(BuiltinOperator.AVERAGE_POOL_2D, [image], [pooled], pool2d(whole, whole))
    shape = b.constant("scores_shape", np.array([1, 3], np.int32))
    b.builtin(BuiltinOperator.RESHAPE, [pooled, shape], [scores], reshape([1, 3]))
    return b.build([image], [scores])


def build_ssd(tf2_layout: bool, metadata: bytes | None = None) -> bytes:
    """The grid colour-blob detector with TFLite_Detection_PostProcess.

    Args:
        tf2_layout: False for the TF1 export layout (outputs boxes, classes, scores, count
            named ``TFLite_Detection_PostProcess[:1-3]``); True for TF2 object-detection
            exports (outputs scores, boxes, count, classes named
            ``StatefulPartitionedCall:1, :3, :0, :2``).
        metadata: a ModelMetadata flatbuffer to store as ``TFLITE_METADATA``.
    """
    grid = SSD_SIZE // SSD_CELL
    layout = "TF2" if tf2_layout else "TF1"
    b = ModelBuilder(f"edge-agent fixture: 8x8-grid colour blob SSD, {layout} output order")
    input_name = "serving_default_input:0" if tf2_layout else "normalized_input_image_tensor"
    image = b.tensor(input_name, [1, SSD_SIZE, SSD_SIZE, 3], np.uint8, CORAL_INPUT)
    cells_q = b.tensor("cell_mean", [1, grid, grid, 3], np.uint8, CORAL_INPUT)
    cell = (SSD_CELL, SSD_CELL)
    b.builtin(BuiltinOperator.AVERAGE_POOL_2D, [image], [cells_q], pool2d(cell, cell))
    cells = b.tensor("cell_mean_real", [1, grid, grid, 3], np.float32)
    b.builtin(BuiltinOperator.DEQUANTIZE, [cells_q], [cells])

    # Four output channels: background (all-zero weights, logit 0) then red, green, blue.
    weights, bias = color_blobs.color_logit_weights()
    weights = np.concatenate([np.zeros((1, 3), np.float32), weights]).reshape(4, 1, 1, 3)
    bias = np.concatenate([np.zeros(1, np.float32), bias])
    logits = b.tensor("class_logits", [1, grid, grid, 4], np.float32)
    b.builtin(
        BuiltinOperator.CONV_2D,
        [cells, b.constant("class_weights", weights), b.constant("class_bias", bias)],
        [logits],
        conv2d_1x1(),
    )
    probabilities = b.tensor("class_probabilities", [1, grid, grid, 4], np.float32)
    b.builtin(BuiltinOperator.LOGISTIC, [logits], [probabilities])
    count = grid * grid
    predictions = b.tensor("raw_outputs/class_predictions", [1, count, 4], np.float32)
    b.builtin(
        BuiltinOperator.RESHAPE,
        [probabilities, b.constant("predictions_shape", np.array([1, count, 4], np.int32))],
        [predictions],
        reshape([1, count, 4]),
    )
    encodings = b.constant("raw_outputs/box_encodings", np.zeros((1, count, 4), np.float32))
    anchors = b.constant("anchors", color_blobs.grid_anchors(grid, grid, (1, 1), grid))

    if tf2_layout:
        names = tuple(f"StatefulPartitionedCall:{i}" for i in (3, 2, 1, 0))
    else:
        names = ("TFLite_Detection_PostProcess",) + tuple(
            f"TFLite_Detection_PostProcess:{i}" for i in (1, 2, 3)
        )
    boxes, classes, scores, num = color_blobs.add_postprocess_outputs(b, SSD_MAX_DETECTIONS, names)
    options = color_blobs.postprocess_options(
        SSD_MAX_DETECTIONS, SSD_MAX_DETECTIONS, SSD_SCORE_THRESHOLD, SSD_IOU_THRESHOLD, False
    )
    b.custom(
        "TFLite_Detection_PostProcess",
        [encodings, predictions, anchors],
        [boxes, classes, scores, num],
        options,
    )
    order = [scores, boxes, num, classes] if tf2_layout else [boxes, classes, scores, num]
    return b.build([image], order, metadata=metadata)


def build_edgetpu_only(size: int, output_quant: Quant, description: str) -> bytes:
    """A model made of one ``edgetpu-custom-op`` node, as the Edge TPU compiler emits.

    Its custom options would hold the compiled executable; here they are a short marker,
    since no CPU runtime can execute the op anyway.
    """
    b = ModelBuilder(description)
    image = b.tensor("image", [1, size, size, 3], np.uint8, CORAL_INPUT)
    scores = b.tensor("scores", [1, 3], np.uint8, output_quant)
    b.custom(EDGETPU_OP, [image], [scores], b"edge-agent fixture: no Edge TPU executable")
    return b.build([image], [scores])


def build_yolo_tiny() -> bytes:
    """A colour-blob detector with YOLOv8's int8 I/O: [1, 64, 64, 3] -> [1, 4 + 3, 64]."""
    grid = SSD_SIZE // SSD_CELL
    count = grid * grid
    b = ModelBuilder("edge-agent fixture: 8x8-grid colour blob detector, YOLOv8 layout")
    image = b.tensor("serving_default_images:0", [1, SSD_SIZE, SSD_SIZE, 3], np.int8, YOLO_INPUT)
    cells_q = b.tensor("cell_mean", [1, grid, grid, 3], np.int8, YOLO_INPUT)
    cell = (SSD_CELL, SSD_CELL)
    b.builtin(BuiltinOperator.AVERAGE_POOL_2D, [image], [cells_q], pool2d(cell, cell), 2)
    cells = b.tensor("cell_mean_real", [1, grid, grid, 3], np.float32)
    b.builtin(BuiltinOperator.DEQUANTIZE, [cells_q], [cells], version=2)
    weights, bias = color_blobs.color_logit_weights(zero_one_domain=True)
    logits = b.tensor("class_logits", [1, grid, grid, 3], np.float32)
    b.builtin(
        BuiltinOperator.CONV_2D,
        [
            cells,
            b.constant("class_weights", weights.reshape(3, 1, 1, 3)),
            b.constant("class_bias", bias),
        ],
        [logits],
        conv2d_1x1(),
    )
    probabilities = b.tensor("class_probabilities", [1, grid, grid, 3], np.float32)
    b.builtin(BuiltinOperator.LOGISTIC, [logits], [probabilities])
    rows = b.tensor("class_rows", [1, count, 3], np.float32)
    b.builtin(
        BuiltinOperator.RESHAPE,
        [probabilities, b.constant("rows_shape", np.array([1, count, 3], np.int32))],
        [rows],
        reshape([1, count, 3]),
    )
    classes = b.tensor("class_scores", [1, 3, count], np.float32)
    perm = b.constant("transpose_perm", np.array([0, 2, 1], np.int32))
    b.builtin(BuiltinOperator.TRANSPOSE, [rows, perm], [classes])
    # Rows cx, cy, w, h of every cell, as fractions of the input (YOLOv8's normalized form).
    anchors = color_blobs.grid_anchors(grid, grid, (1, 1), grid)  # yc, xc, h, w
    boxes = anchors[:, [1, 0, 3, 2]].T[None].copy()
    merged = b.tensor("predictions", [1, 4 + 3, count], np.float32)
    b.builtin(
        BuiltinOperator.CONCATENATION,
        [b.constant("cell_boxes", boxes), classes],
        [merged],
        concatenation(1),
    )
    output = b.tensor("PartitionedCall:0", [1, 4 + 3, count], np.int8, YOLO_OUTPUT)
    b.builtin(BuiltinOperator.QUANTIZE, [merged], [output])
    signature = ("serving_default", {"images": image}, {"output0": output})
    return b.build([image], [output], signature=signature)


def build_fails_on_input() -> bytes:
    """A classifier that invokes on an image with a black pixel and fails on any other.

    ``REDUCE_MIN`` over the whole image gives its darkest value, ``CAST`` makes it an
    int32 index, and ``GATHER`` picks that row of a one-row score table. An all-zero
    image (the daemon's warm-up input) reads row 0; an image whose every value is
    above 0 indexes past the table and the GATHER fails at invoke, never at allocate.
    """
    b = ModelBuilder("edge-agent fixture: fails at invoke unless the image has a black pixel")
    image = b.tensor("image", [1, COLOR_SIZE, COLOR_SIZE, 3], np.uint8, CORAL_INPUT)
    darkest = b.tensor("darkest", [1], np.uint8, CORAL_INPUT)
    reducer = schema.ReducerOptionsT()
    reducer.keepDims = False
    axes = b.constant("axes", np.array([1, 2, 3], np.int32))
    b.builtin(BuiltinOperator.REDUCE_MIN, [image, axes], [darkest], reducer)
    index = b.tensor("row_index", [1], np.int32)
    b.builtin(BuiltinOperator.CAST, [darkest], [index])
    score_quant = Quant.per_tensor(1 / 256, 0)
    table = b.constant("score_table", np.array([FAILS_ON_INPUT_SCORES], np.uint8), score_quant)
    scores = b.tensor("scores", [1, 3], np.uint8, score_quant)
    gather = schema.GatherOptionsT()
    gather.axis = 0
    b.builtin(BuiltinOperator.GATHER, [table, index], [scores], gather)
    return b.build([image], [scores])


def labels_text() -> bytes:
    """The class names, one a line (index 0 = red)."""
    return "".join(f"{label}\n" for label in LABELS).encode()


def fixture_files() -> dict[str, bytes]:
    """Every file of tests/fixtures/models, by name."""
    return {
        "color_uint8.tflite": build_color_classifier(
            np.uint8, CORAL_INPUT, "edge-agent fixture: uint8 channel-mean classifier"
        ),
        "color_int8.tflite": build_color_classifier(
            np.int8, YOLO_INPUT, "edge-agent fixture: int8 channel-mean classifier"
        ),
        "color_float.tflite": build_color_classifier(
            np.float32, None, "edge-agent fixture: float channel-mean classifier"
        ),
        "color_labels.txt": labels_text(),
        "per_channel_input.tflite": build_per_channel_input(),
        "ssd_postprocess.tflite": build_ssd(tf2_layout=False),
        "ssd_postprocess_tf2.tflite": build_ssd(tf2_layout=True),
        "ssd_tf2_metadata.tflite": export_families.append_files(
            build_ssd(tf2_layout=True, metadata=export_families.detector_metadata()),
            export_families.detector_label_files(),
        ),
        "color_uint8_edgetpu.tflite": build_edgetpu_only(
            COLOR_SIZE, CORAL_INPUT, "edge-agent fixture: Edge TPU-only twin of color_uint8"
        ),
        "orphan_edgetpu.tflite": build_edgetpu_only(
            48, Quant.per_tensor(1 / 256, 0), "edge-agent fixture: Edge TPU-only, no CPU twin"
        ),
        "yolo_tiny_int8.tflite": build_yolo_tiny(),
        "not_a_model.tflite": NOT_A_MODEL,
        "fails_on_input.tflite": build_fails_on_input(),
        **export_families.family_fixture_files(),
    }


def demo_files() -> dict[str, bytes]:
    """The deterministic files of models/demo (the clip is written separately)."""
    truth = json.dumps(color_blobs.clip_truth(), separators=(",", ":")) + "\n"
    return {
        "color_blobs.tflite": color_blobs.build_demo_detector(),
        "labels.txt": labels_text(),
        "clip_truth.json": truth.encode(),
    }


def write_clip(path: Path) -> None:
    """Encode the demo clip (MJPG AVI, 640x480, 15 fps, 10 s)."""
    import cv2

    width, height = color_blobs.CLIP_SIZE
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"MJPG"), color_blobs.CLIP_FPS, (width, height)
    )
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG to {path}")
    try:
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, color_blobs.CLIP_JPEG_QUALITY)
        for index in range(color_blobs.CLIP_FRAMES):
            writer.write(color_blobs.clip_frame(index))
    finally:
        writer.release()


def _write(directory: Path, files: dict[str, bytes]) -> None:
    """Write files whose content changed (keeps mtimes of up-to-date files)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != content:
            path.write_bytes(content)
            print(f"wrote {path} ({len(content)} bytes)")


def _stale(directory: Path, files: dict[str, bytes]) -> list[str]:
    """Names whose file is missing or differs from what the generator makes."""
    return [
        name
        for name, content in files.items()
        if not (directory / name).is_file() or (directory / name).read_bytes() != content
    ]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--fixtures-only", action="store_true", help="skip models/demo")
    only.add_argument("--demo-only", action="store_true", help="skip tests/fixtures/models")
    parser.add_argument("--fixtures-dir", type=Path, default=FIXTURES_DIR)
    parser.add_argument("--demo-dir", type=Path, default=DEMO_DIR)
    parser.add_argument("--no-clip", action="store_true", help="do not re-encode clip.avi")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is stale"
    )
    args = parser.parse_args(argv)

    plan = []
    if not args.demo_only:
        plan.append((args.fixtures_dir, fixture_files()))
    if not args.fixtures_only:
        plan.append((args.demo_dir, demo_files()))
    if args.check:
        stale = [str(d / n) for d, files in plan for n in _stale(d, files)]
        for path in stale:
            print(f"stale: {path}")
        return 1 if stale else 0
    for directory, files in plan:
        _write(directory, files)
    if not args.fixtures_only and not args.no_clip:
        clip = args.demo_dir / "clip.avi"
        fresh = clip.with_suffix(".tmp.avi")
        write_clip(fresh)
        _write(args.demo_dir, {clip.name: fresh.read_bytes()})
        fresh.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
