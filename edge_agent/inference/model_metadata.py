"""What a ``.tflite`` file says about itself: TFLite metadata and post-processing options.

* TFLite **metadata** (Model Maker, MediaPipe and the TFLite Support writers): a
  ``TFLITE_METADATA`` buffer holding a ``ModelMetadata`` flatbuffer (identifier ``M001``)
  whose input tensor may carry ``NormalizationOptions`` (mean/std per channel) and whose
  output tensors may name a label file (``TENSOR_AXIS_LABELS`` for a classifier's
  scores, ``TENSOR_VALUE_LABELS`` for an object detector's classes); the files
  themselves sit in a zip archive appended to the flatbuffer.
* Ultralytics' export metadata (``task``, ``end2end``, ``names``, ...): up to 8.2 the
  repr of a dict in the label file the TFLite metadata names (``temp_meta.txt``); from
  8.3 a ``metadata.json`` in a zip archive appended to the model, without any TFLite
  metadata.
* The ``TFLite_Detection_PostProcess`` op's custom options, a flexbuffer map:
  ``num_classes``, ``max_detections``, the NMS thresholds, the box coder scales.
* The quantization a float input is given by the ``QUANTIZE`` op right after it (the
  converter's default float-I/O export of a quantized model).

The model and metadata flatbuffers are read field by field (:mod:`flatbuf`,
:mod:`tflite_file`): the metadata schema's Python bindings ship only in
``tflite-support``, which has no wheels for current Pythons and pulls in a large
dependency tree. Only the handful of fields used here are read; their slots follow
``metadata_schema.fbs``. This works with ``tflite-runtime`` alone too.
"""

from __future__ import annotations

import ast
import io
import json
import os
import zipfile
from typing import Any, NamedTuple

from flatbuffers import flexbuffers
from flatbuffers.table import Table

from edge_agent.errors import ModelError
from edge_agent.inference import flatbuf, tflite_file
from edge_agent.inference.labels import parse_labels
from edge_agent.inference.model_info import read_model_bytes, tensor_spec
from edge_agent.inference.tensors import TensorSpec

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
POSTPROCESS_OP = "TFLite_Detection_PostProcess"
ULTRALYTICS_FILE = "metadata.json"  # appended by Ultralytics >= 8.3 exports
# Field slots (0-based declaration order) of the metadata schema's tables.
_MODEL_SUBGRAPHS, _MODEL_FILES = 3, 6
_SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_FILES = 2, 3, 4
_TENSOR_PROCESS_UNITS, _TENSOR_FILES = 4, 6
_UNIT_OPTIONS_TYPE, _UNIT_OPTIONS = 0, 1
_NORM_MEAN, _NORM_STD = 0, 1
_FILE_NAME, _FILE_TYPE = 0, 2
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union tag
# AssociatedFileType of label files: TENSOR_AXIS_LABELS (a classifier's scores), and
# TENSOR_VALUE_LABELS (the class ids of an object detector's classes output, as TFLite
# Support's object detector writer and Model Maker's EfficientDet-Lite write them).
_LABEL_FILE_TYPES = (2, 3)
_EIGHT_BIT = (3, 9)  # TensorType UINT8, INT8


class ModelMetadata(NamedTuple):
    """What the file declares; every field is None when the file does not say.

    Attributes:
        mean, std: the input's NormalizationOptions (one value or one per channel).
        labels: the parsed label file named by the output tensor (or the model).
        labels_file: that file's name inside the model.
        postprocess: the SSD post-processing op's custom options.
        input_quantized: the 8-bit tensor a ``QUANTIZE`` op makes of the input first,
            per-tensor quantized (the evidence of a float input's calibrated range).
        export_task: an Ultralytics export's ``task`` (detect, classify, pose, segment,
            obb).
        end2end: whether an Ultralytics export outputs its own ``[1, N, 6]`` detections:
            its ``end2end`` flag (NMS-free heads: YOLOv10, YOLO26) or ``args.nms``.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: dict[int, str] | None = None
    labels_file: str | None = None
    postprocess: dict[str, Any] | None = None
    input_quantized: TensorSpec | None = None
    export_task: str | None = None
    end2end: bool | None = None


class _Export(NamedTuple):
    """What an Ultralytics export says about itself."""

    names: dict[int, str] | None
    task: str | None
    end2end: bool | None


def _normalization(tensor: Table) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The NormalizationOptions of an input TensorMetadata."""
    for unit in flatbuf.tables(tensor, _TENSOR_PROCESS_UNITS):
        if flatbuf.byte(unit, _UNIT_OPTIONS_TYPE) == _NORMALIZATION_OPTIONS:
            options = flatbuf.sub_table(unit, _UNIT_OPTIONS)
            if options is not None:
                return flatbuf.floats(options, _NORM_MEAN), flatbuf.floats(options, _NORM_STD)
    return None


def _label_file(*owners: tuple[Table | None, int]) -> str | None:
    """The first label file among the owners' associated files."""
    for owner, slot in owners:
        if owner is None:
            continue
        for entry in flatbuf.tables(owner, slot):
            if flatbuf.byte(entry, _FILE_TYPE) in _LABEL_FILE_TYPES:
                return flatbuf.string(entry, _FILE_NAME)
    return None


def parse_metadata(blob: bytes) -> tuple[tuple | None, str | None]:
    """``((mean, std) | None, label file name | None)`` from a ModelMetadata flatbuffer.

    Raises:
        ModelError: the buffer is not a ModelMetadata flatbuffer.
    """
    if len(blob) < 8 or blob[4:8] != METADATA_IDENTIFIER:
        raise ModelError("TFLITE_METADATA is not a metadata flatbuffer (no M001 identifier)")
    root = flatbuf.root(bytearray(blob))
    subgraphs = flatbuf.tables(root, _MODEL_SUBGRAPHS)
    if not subgraphs:
        return None, _label_file((root, _MODEL_FILES))
    subgraph = subgraphs[0]
    inputs = flatbuf.tables(subgraph, _SUBGRAPH_INPUTS)
    outputs = flatbuf.tables(subgraph, _SUBGRAPH_OUTPUTS)
    norm = _normalization(inputs[0]) if inputs else None
    owners = [(o, _TENSOR_FILES) for o in outputs]
    owners += [(subgraph, _SUBGRAPH_FILES), (root, _MODEL_FILES)]
    return norm, _label_file(*owners)


def _flatbuffer_parts(data: bytes) -> tuple[bytes | None, dict[str, Any] | None]:
    """(metadata buffer, post-processing options) of a model's flatbuffer."""
    blob = tflite_file.metadata_buffer(data, METADATA_NAME)
    raw = tflite_file.custom_options(data, POSTPROCESS_OP)
    return blob, dict(flexbuffers.Loads(raw)) if raw else None


def _input_quantized(path: str, data: bytes) -> TensorSpec | None:
    """The input's first ``QUANTIZE`` output when it is 8-bit and per-tensor quantized
    (an int16 or per-channel one says nothing the normalization rule reads)."""
    raw = tflite_file.input_quantize(data)
    if raw is None or raw.type not in _EIGHT_BIT or len(raw.scales) != 1 or raw.scales[0] <= 0:
        return None
    return tensor_spec(path, raw)


def read_model_metadata(
    path: str | os.PathLike[str], *, archive: bool = True, metadata: bool = True
) -> ModelMetadata:
    """Read the metadata and post-processing options of a model file.

    A file without metadata gives a ModelMetadata with only what its graph says (the
    SSD options, the input's QUANTIZE op); an Edge-TPU-compiled file keeps its CPU twin's
    metadata (the compiler copies it).

    Args:
        path: the model file.
        archive: also read the files of the zip archive appended to it (the label file
            the metadata names, Ultralytics' metadata.json); False leaves them out.
        metadata: also read the TFLite metadata (normalization, label file name); False
            keeps only what the graph says.

    Raises:
        ModelError: the file is unreadable, or its metadata is corrupt or names a label
            file missing from the appended archive (the message names the file).
    """
    path = os.fspath(path)
    data = read_model_bytes(path)
    try:
        blob, options = _flatbuffer_parts(data)
        norm, label_name = parse_metadata(blob) if blob and metadata else (None, None)
        quantized = _input_quantized(path, data)
    except flatbuf.CorruptFlatbuffer as exc:
        raise ModelError(f"{path}: corrupt TFLite metadata: {exc}") from exc
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc
    except Exception as exc:  # a corrupt flatbuffer raises from deep inside
        raise ModelError(f"{path}: corrupt TFLite metadata: {exc}") from exc
    labels, export = None, None
    if not archive:
        pass
    elif label_name:
        text = _archive_text(path, data, label_name)
        export = _ultralytics(text)
        labels = export.names if export and export.names is not None else parse_labels(text)
    else:
        text = _archive_text(path, data, ULTRALYTICS_FILE, required=False)
        export = _ultralytics(text) if text is not None else None
        if export is not None and export.names is not None:
            labels, label_name = export.names, ULTRALYTICS_FILE
    mean, std = norm if norm and norm[0] and norm[1] else (None, None)
    return ModelMetadata(
        mean,
        std,
        labels,
        label_name if labels is not None else None,
        options,
        quantized,
        export.task if export else None,
        export.end2end if export else None,
    )


def _archive_text(path: str, data: bytes, name: str, required: bool = True) -> str | None:
    """The file ``name`` of the zip archive appended to the model (None when it is not
    there and not ``required``).

    Raises:
        ModelError: a ``required`` file is missing or unreadable.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.read(name).decode("utf-8")
    # Besides BadZipFile and KeyError (no archive, no such file), a damaged archive raises
    # from deep inside zipfile and zlib: EOFError, zlib.error, NotImplementedError (an
    # unsupported compression), RuntimeError (encrypted) ...
    except Exception as exc:
        if not required:
            return None
        raise ModelError(
            f"{path}: metadata names label file {name!r} but the model does not carry it "
            f"readably ({exc})"
        ) from exc


def _ultralytics(text: str) -> _Export | None:
    """An Ultralytics export's metadata: JSON (>= 8.3) or the repr of its dict (8.2 and
    before, ``{'task': 'detect', ..., 'names': {0: 'person', ...}}``)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        try:
            meta = ast.literal_eval(text.strip())  # literals only: never evaluates code
        # TypeError: a list, set or dict as a key of a dict or a set.
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    if not isinstance(meta, dict):
        return None
    task, end2end = meta.get("task"), meta.get("end2end")
    args = meta.get("args")
    if isinstance(args, dict) and args.get("nms") is True:
        # An export with nms=True outputs the picked detections, [1, max_det, 6], while
        # "end2end" stays false for the heads (v8, v11) that are not NMS-free themselves.
        end2end = True
    return _Export(
        _names(meta.get("names")),
        task if isinstance(task, str) else None,
        end2end if isinstance(end2end, bool) else None,
    )


def _names(names: Any) -> dict[int, str] | None:
    """Class names keyed by id (JSON keys are strings of digits)."""
    if not isinstance(names, dict):
        return None
    try:
        return {int(k): str(v) for k, v in names.items() if not isinstance(k, bool)}
    except (TypeError, ValueError):
        return None
