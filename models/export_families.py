"""Fixtures for the export families edge-agent tells apart (see tests/fixtures/README.md).

* ``color_float_metadata.tflite``: the float channel-mean classifier carrying TFLite
  metadata: NormalizationOptions mean 127.5, std 127.5 and an embedded label file.
* ``ssd_tf2_metadata.tflite`` (made by make_models.py from its TF2-order SSD): the
  metadata TFLite Support's object detector writer gives Model Maker's EfficientDet-Lite
  exports, the label file a TENSOR_VALUE_LABELS file of the classes output.
* ``yolov5_objectness.tflite``: a YOLOv5-style head ``[1, 252, 5 + 3]`` for a 64x64
  input (three anchors on the stride 8/16/32 grids: 3 * (64 + 16 + 4) candidates).
* ``yolo_pixel_boxes.tflite``: a YOLOv8-layout head whose boxes are in input pixels.
* ``yolo_end2end.tflite``: an end-to-end head ``[1, 64, 6]`` (YOLOv10 / YOLO26 style:
  x0, y0, x1, y1, score, class per detection) carrying an Ultralytics 8.3-style
  ``metadata.json`` (task, end2end, names) in an appended zip, without TFLite metadata.

The metadata is written field by field in the layout of TFLite's metadata_schema.fbs
(ModelMetadata, identifier ``M001``), and its label file is a zip archive appended to
the flatbuffer, as the TFLite Support metadata writers do.
"""

from __future__ import annotations

import io
import json
import zipfile

import color_blobs
import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from tflite_builder import BuiltinOperator, ModelBuilder, concatenation, conv2d_1x1, pool2d, reshape

METADATA_LABELS = ("crimson", "lime", "azure")
METADATA_LABEL_FILE = "embedded_labels.txt"
METADATA_MEAN, METADATA_STD = 127.5, 127.5
TENSOR_AXIS_LABELS, TENSOR_VALUE_LABELS = 2, 3  # metadata_schema.fbs AssociatedFileType
DETECTOR_LABEL_FILE = "labelmap.txt"
YOLO_SIZE, YOLO_CELL = 64, 8
V5_CANDIDATES = 3 * (8 * 8 + 4 * 4 + 2 * 2)
V5_OBJECTNESS = 0.5
_ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def _vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    """A vector of table/string offsets."""
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values: list[float]) -> int:
    """A vector of float32."""
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        b.PrependFloat32(value)
    return b.EndVector()


def classifier_metadata(mean: float, std: float, label_file: str) -> bytes:
    """ModelMetadata: input NormalizationOptions, output TENSOR_AXIS_LABELS file.

    Slots follow metadata_schema.fbs: ModelMetadata.subgraph_metadata = 3,
    SubGraphMetadata.input/output_tensor_metadata = 2/3, TensorMetadata.process_units
    = 4 and associated_files = 6, ProcessUnit.options_type/options = 0/1 (type 1 is
    NormalizationOptions), NormalizationOptions.mean/std = 0/1, AssociatedFile.name = 0
    and type = 2 (2 is TENSOR_AXIS_LABELS).
    """
    return image_metadata(mean, std, [(label_file, TENSOR_AXIS_LABELS)])


def detector_metadata() -> bytes:
    """ModelMetadata as TFLite Support's object detector writer (Model Maker's
    EfficientDet-Lite) makes it for the TF2-order SSD fixture's outputs (scores, boxes,
    count, classes): the label file is a TENSOR_VALUE_LABELS file of the classes tensor."""
    files = [None, None, None, (DETECTOR_LABEL_FILE, TENSOR_VALUE_LABELS)]
    return image_metadata(METADATA_MEAN, METADATA_STD, files)


def image_metadata(mean: float, std: float, output_files: list[tuple[str, int] | None]) -> bytes:
    """ModelMetadata with the input's NormalizationOptions and one TensorMetadata per
    output, carrying the ``(name, AssociatedFileType)`` file given for it, if any (see
    classifier_metadata for the slots)."""
    b = flatbuffers.Builder(256)
    mean_v, std_v = _floats(b, [mean]), _floats(b, [std])
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(0, mean_v, 0)
    b.PrependUOffsetTRelativeSlot(1, std_v, 0)
    norm = b.EndObject()
    b.StartObject(2)
    b.PrependUint8Slot(0, 1, 0)
    b.PrependUOffsetTRelativeSlot(1, norm, 0)
    unit = b.EndObject()
    units = _vector(b, [unit])
    b.StartObject(7)
    b.PrependUOffsetTRelativeSlot(4, units, 0)
    input_tensor = b.EndObject()
    output_tensors = []
    for entry in output_files:
        files = None
        if entry is not None:
            name = b.CreateString(entry[0])
            b.StartObject(5)
            b.PrependUOffsetTRelativeSlot(0, name, 0)
            b.PrependInt8Slot(2, entry[1], 0)
            files = _vector(b, [b.EndObject()])
        b.StartObject(7)
        if files is not None:
            b.PrependUOffsetTRelativeSlot(6, files, 0)
        output_tensors.append(b.EndObject())
    inputs, outputs = _vector(b, [input_tensor]), _vector(b, output_tensors)
    b.StartObject(10)
    b.PrependUOffsetTRelativeSlot(2, inputs, 0)
    b.PrependUOffsetTRelativeSlot(3, outputs, 0)
    subgraph = b.EndObject()
    subgraphs = _vector(b, [subgraph])
    model_name = b.CreateString("edge-agent metadata fixture")
    b.StartObject(8)
    b.PrependUOffsetTRelativeSlot(0, model_name, 0)
    b.PrependUOffsetTRelativeSlot(3, subgraphs, 0)
    b.Finish(b.EndObject(), file_identifier=b"M001")
    return bytes(b.Output())


def detector_label_files() -> dict[str, bytes]:
    """The label file detector_metadata names: the class names from class 0, one a
    line, as Model Maker writes them for EfficientDet-Lite."""
    return {DETECTOR_LABEL_FILE: "".join(f"{label}\n" for label in METADATA_LABELS).encode()}


def append_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """The model with a deterministic zip archive of ``files`` appended."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), content)
    return model + out.getvalue()


def build_metadata_classifier() -> bytes:
    """The float channel-mean classifier with normalization and labels in its metadata."""
    b = ModelBuilder("edge-agent fixture: float channel-mean classifier with TFLite metadata")
    size = 32
    image = b.tensor("image", [1, size, size, 3], np.float32)
    pooled = b.tensor("channel_mean", [1, 1, 1, 3], np.float32)
    scores = b.tensor("scores", [1, 3], np.float32)
    b.builtin(
        BuiltinOperator.AVERAGE_POOL_2D, [image], [pooled], pool2d((size, size), (size, size))
    )
    shape = b.constant("scores_shape", np.array([1, 3], np.int32))
    b.builtin(BuiltinOperator.RESHAPE, [pooled, shape], [scores], reshape([1, 3]))
    meta = classifier_metadata(METADATA_MEAN, METADATA_STD, METADATA_LABEL_FILE)
    model = b.build([image], [scores], metadata=meta)
    labels = "".join(f"{label}\n" for label in METADATA_LABELS).encode()
    return append_files(model, {METADATA_LABEL_FILE: labels})


def _cell_class_rows(b: ModelBuilder, image: int) -> int:
    """[1, 64, 3] sigmoid colour scores of the 8x8 cells of a [0, 1] float image."""
    grid = YOLO_SIZE // YOLO_CELL
    cells = b.tensor("cell_mean", [1, grid, grid, 3], np.float32)
    cell = (YOLO_CELL, YOLO_CELL)
    b.builtin(BuiltinOperator.AVERAGE_POOL_2D, [image], [cells], pool2d(cell, cell))
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
    rows = b.tensor("class_rows", [1, grid * grid, 3], np.float32)
    b.builtin(
        BuiltinOperator.RESHAPE,
        [probabilities, b.constant("rows_shape", np.array([1, grid * grid, 3], np.int32))],
        [rows],
        reshape([1, grid * grid, 3]),
    )
    return rows


def cell_boxes(scale: float) -> np.ndarray:
    """[64, 4] cx, cy, w, h of every 8x8 cell, in fractions of the input times ``scale``."""
    grid = YOLO_SIZE // YOLO_CELL
    anchors = color_blobs.grid_anchors(grid, grid, (1, 1), grid)  # yc, xc, h, w
    return (anchors[:, [1, 0, 3, 2]] * np.float32(scale)).astype(np.float32)


def build_yolov5() -> bytes:
    """YOLOv5-style ``[1, 252, 8]``: per candidate cx, cy, w, h, objectness, 3 classes.

    The first 64 candidates are the 8x8 cells (objectness 0.5, class scores from the
    colour of the cell); the other 188 are empty anchors (all zeros, a PAD).
    """
    b = ModelBuilder("edge-agent fixture: colour blob detector, YOLOv5 objectness head")
    image = b.tensor("serving_default_input_1:0", [1, YOLO_SIZE, YOLO_SIZE, 3], np.float32)
    rows = _cell_class_rows(b, image)
    count = (YOLO_SIZE // YOLO_CELL) ** 2
    objectness = np.full((count, 1), V5_OBJECTNESS, np.float32)
    head = np.concatenate([cell_boxes(1.0), objectness], axis=1)[None]
    cells = b.tensor("cell_candidates", [1, count, 8], np.float32)
    b.builtin(
        BuiltinOperator.CONCATENATION,
        [b.constant("cell_head", head), rows],
        [cells],
        concatenation(2),
    )
    # The empty anchors: zero padding after the cell candidates.
    paddings = np.array([[0, 0], [0, V5_CANDIDATES - count], [0, 0]], np.int32)
    output = b.tensor("StatefulPartitionedCall:0", [1, V5_CANDIDATES, 8], np.float32)
    b.builtin(BuiltinOperator.PAD, [cells, b.constant("empty_anchors", paddings)], [output])
    return b.build([image], [output])


def build_yolo_pixel_boxes() -> bytes:
    """YOLOv8-layout ``[1, 4 + 3, 64]`` whose box rows are in input pixels."""
    b = ModelBuilder("edge-agent fixture: colour blob detector, YOLOv8 head in pixels")
    image = b.tensor("serving_default_images:0", [1, YOLO_SIZE, YOLO_SIZE, 3], np.float32)
    rows = _cell_class_rows(b, image)
    count = (YOLO_SIZE // YOLO_CELL) ** 2
    classes = b.tensor("class_scores", [1, 3, count], np.float32)
    perm = b.constant("transpose_perm", np.array([0, 2, 1], np.int32))
    b.builtin(BuiltinOperator.TRANSPOSE, [rows, perm], [classes])
    boxes = cell_boxes(float(YOLO_SIZE)).T[None].copy()
    output = b.tensor("PartitionedCall:0", [1, 4 + 3, count], np.float32)
    b.builtin(
        BuiltinOperator.CONCATENATION,
        [b.constant("cell_boxes", boxes), classes],
        [output],
        concatenation(1),
    )
    return b.build([image], [output])


END2END_LABELS = ("crimson", "lime", "azure")


def build_yolo_end2end() -> bytes:
    """End-to-end ``[1, 64, 6]``: per 8x8 cell its corners (0..1), its best colour score
    and that colour's class id, with Ultralytics' metadata.json appended."""
    b = ModelBuilder("edge-agent fixture: colour blob detector, end-to-end YOLO head")
    image = b.tensor("serving_default_images:0", [1, YOLO_SIZE, YOLO_SIZE, 3], np.float32)
    rows = _cell_class_rows(b, image)
    count = (YOLO_SIZE // YOLO_CELL) ** 2
    axis = b.constant("class_axis", np.array([2], np.int32))
    best = b.tensor("best_score", [1, count, 1], np.float32)
    keep_axis = schema.ReducerOptionsT()
    keep_axis.keepDims = True
    b.builtin(BuiltinOperator.REDUCE_MAX, [rows, axis], [best], keep_axis)
    index = b.tensor("best_class", [1, count], np.int32)
    argmax = schema.ArgMaxOptionsT()
    argmax.outputType = schema.TensorType.INT32
    b.builtin(BuiltinOperator.ARG_MAX, [rows, axis], [index], argmax)
    as_float = b.tensor("best_class_float", [1, count], np.float32)
    cast = schema.CastOptionsT()
    cast.inDataType, cast.outDataType = schema.TensorType.INT32, schema.TensorType.FLOAT32
    b.builtin(BuiltinOperator.CAST, [index], [as_float], cast)
    column = b.tensor("best_class_column", [1, count, 1], np.float32)
    shape = b.constant("column_shape", np.array([1, count, 1], np.int32))
    b.builtin(BuiltinOperator.RESHAPE, [as_float, shape], [column], reshape([1, count, 1]))
    boxes = cell_boxes(1.0)
    corners = np.concatenate(
        [boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1
    )[None].astype(np.float32)
    output = b.tensor("PartitionedCall:0", [1, count, 6], np.float32)
    b.builtin(
        BuiltinOperator.CONCATENATION,
        [b.constant("cell_corners", corners), best, column],
        [output],
        concatenation(2),
    )
    meta = {
        "author": "Ultralytics",
        "task": "detect",
        "end2end": True,
        "imgsz": [YOLO_SIZE, YOLO_SIZE],
        "names": dict(enumerate(END2END_LABELS)),
    }
    return append_files(b.build([image], [output]), {"metadata.json": json.dumps(meta).encode()})


def family_fixture_files() -> dict[str, bytes]:
    """The files this module adds to tests/fixtures/models."""
    return {
        "color_float_metadata.tflite": build_metadata_classifier(),
        "yolov5_objectness.tflite": build_yolov5(),
        "yolo_pixel_boxes.tflite": build_yolo_pixel_boxes(),
        "yolo_end2end.tflite": build_yolo_end2end(),
        "ssd_labelmap.txt": "".join(f"{x}\n" for x in ("???", *color_blobs.LABELS)).encode(),
    }
