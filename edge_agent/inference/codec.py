"""The pipeline-side halves of a model: preprocessing into the input tensor and decoding.

The daemon splits a model across processes: the engine runs in the crash-isolated worker
(:mod:`edge_agent.inference.worker`), while the codec built here preprocesses frames
into shared memory and decodes the worker's outputs in the pipeline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, NamedTuple, TypeVar

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.common import DETECTION_YOLO
from edge_agent.inference.adapters.task import check_export_task
from edge_agent.inference.labels import label_count_warning, label_offset, read_labels
from edge_agent.inference.model_info import static_tensors
from edge_agent.inference.model_metadata import ModelMetadata, read_model_metadata
from edge_agent.inference.normalization import InputNormalization, NormSource, choose_normalization
from edge_agent.inference.postprocess import Decoder, default_resize
from edge_agent.inference.preprocess import Preprocessor, input_geometry
from edge_agent.inference.tensors import TensorSpec

if TYPE_CHECKING:  # the options and the worker import this module's users, not it
    from edge_agent.inference.model import ModelOptions
    from edge_agent.inference.worker import WorkerInfo

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


LABELS_FILE = "file"  # model.labels / --labels
LABELS_MODEL = "model"  # the label file inside the model's metadata
LABELS_NONE = "none"


class Codec(NamedTuple):
    """The pipeline-side halves of a model: preprocessing and decoding.

    ``notes`` are facts worth one INFO line (e.g. a normalization the rule guessed);
    ``warnings`` are worth a WARNING.
    """

    preprocessor: Preprocessor
    decoder: Decoder
    warnings: tuple[str, ...]
    normalization: InputNormalization | None = None
    labels_source: str = LABELS_NONE
    notes: tuple[str, ...] = ()
    metadata: ModelMetadata | None = None


def load_labels(options: ModelOptions) -> dict[int, str]:
    """The label map of a model (empty when no file is configured).

    Raises:
        ModelError: the label file cannot be read.
    """
    return read_labels(options.labels) if options.labels else {}


def load_metadata(path: str) -> tuple[ModelMetadata, str | None]:
    """The model file's metadata, and a warning when it could not be read.

    Metadata only refines what the tensors say, so unreadable metadata never stops a
    model that loads: it is reported, and only what cannot be read is left out. A label
    file missing from the archive appended to the model (a tool that rewrote the
    flatbuffer drops it) leaves out that archive's files; unreadable TFLite metadata its
    normalization too. The graph's own facts (the SSD op's class count, the input's
    QUANTIZE op) still hold.
    """
    if not path or not os.path.isfile(path):
        return ModelMetadata(), None
    try:
        return read_model_metadata(path), None
    except ModelError as exc:
        problem = str(exc)
    fallbacks = (("its label file", True), ("the model's metadata", False))
    for left_out, metadata in fallbacks:
        try:
            kept = read_model_metadata(path, archive=False, metadata=metadata)
        except ModelError:
            continue
        return kept, f"ignoring {left_out}: {problem}"
    return ModelMetadata(), f"ignoring the model's metadata: {problem}"


def build_codec(
    input_spec: TensorSpec,
    output_specs: Sequence[TensorSpec],
    options: ModelOptions,
    labels: dict[int, str],
    metadata: ModelMetadata | None = None,
) -> Codec:
    """Make the preprocessor and decoder for a model's tensors.

    Args:
        input_spec, output_specs: the running model's tensors.
        options: the model options.
        labels: the configured label file's labels (empty: none configured).
        metadata: the model file's metadata (None: read from ``options.path``).

    Raises:
        ModelError: the input is not a fixed-size image tensor, or the outputs do not fit
            the task; the message names the model file.
    """
    try:
        return _codec(input_spec, output_specs, options, labels, metadata)
    except ModelError as exc:  # the tensor checks below know tensors, not files
        raise ModelError(f"{options.path}: {exc}") from exc


def _codec(
    input_spec: TensorSpec,
    output_specs: Sequence[TensorSpec],
    options: ModelOptions,
    labels: dict[int, str],
    metadata: ModelMetadata | None,
) -> Codec:
    """build_codec without the file name in its errors."""
    warnings, notes = [], []
    if metadata is None:
        metadata, problem = load_metadata(options.path)
        if problem:
            warnings.append(problem)
    check_export_task(metadata.export_task)
    source = LABELS_FILE if labels else LABELS_NONE
    if not labels and metadata.labels:
        labels, source = metadata.labels, LABELS_MODEL
    height, width = input_geometry(input_spec)
    ssd_classes = int((metadata.postprocess or {}).get("num_classes", 0) or 0)
    decoder = Decoder(
        output_specs,
        (width, height),
        task=options.task,
        labels=labels,
        settings=options.settings,
        labels_filter=options.labels_filter,
        ssd_num_classes=ssd_classes,
        end2end=metadata.end2end,
    )
    norm_meta = (metadata.mean, metadata.std) if metadata.mean and metadata.std else None
    try:
        chosen = choose_normalization(
            input_spec,
            mean=options.input_mean,
            std=options.input_std,
            metadata=norm_meta,
            yolo=decoder.task == DETECTION_YOLO,
            quantized_as=metadata.input_quantized,
        )
    except ValueError as exc:  # only the metadata's: configured values are checked on load
        raise ModelError(
            f"its metadata's input normalization (mean {list(metadata.mean)}, std "
            f"{list(metadata.std)}) is unusable: {exc}; set model.input_mean/input_std"
        ) from exc
    if chosen.source is NormSource.GUESS:
        notes.append(
            f"input normalization {chosen.reason}; set model.input_mean/input_std "
            "(infer --mean/--std) if it was trained otherwise"
        )
    resize = default_resize(decoder.task) if options.resize == "auto" else options.resize
    pre = Preprocessor(
        input_spec,
        resize=resize,
        mean=chosen.norm.mean,
        std=chosen.norm.std,
        interpolation="linear" if decoder.task == DETECTION_YOLO else "auto",
    )
    if labels and decoder.num_classes:
        aligned = decoder.label_offset == label_offset(labels, decoder.num_classes)
        warning = label_count_warning(labels, decoder.num_classes, background_offset_ok=aligned)
        if warning:
            where = options.labels if source == LABELS_FILE else "the model's label file"
            warnings.append(f"{where}: {warning}")
    return Codec(pre, decoder, tuple(warnings), chosen, source, tuple(notes), metadata)


def log_codec(codec: Codec, model: str) -> None:
    """Log a codec's warnings and notes once, naming the model."""
    for warning in codec.warnings:
        logger.warning("model %s: %s", model, warning)
    for note in codec.notes:
        logger.info("model %s: %s", model, note)


def make_codec(info: WorkerInfo, options: ModelOptions) -> Codec:
    """Build the codec for a running worker's tensors, logging its warnings once.

    Raises:
        ModelError: the input is not an image tensor, or the outputs do not fit the task.
    """
    codec = build_codec(info.input, info.outputs, options, load_labels(options))
    log_codec(codec, options.path)
    return codec


def static_codec(options: ModelOptions) -> Codec:
    """The codec a configured model will get, built from the tensors its file declares,
    without an interpreter (so an ``_edgetpu`` model is checked without a TPU).

    This is what ``edge-agent run`` checks before it starts a model and what
    ``check-config`` reports: the model file, the label file and the task are read by
    the same functions the running worker uses.

    Raises:
        ModelError: with ``key`` naming the setting at fault: ``model.path`` (the model
            cannot be read, is not TFLite, or its input is not an image), ``model.labels``
            (the label file cannot be read) or ``model.task`` (the outputs do not fit the
            configured task; ``model.path`` when they fit no task, or when the model
            metadata's normalization is unusable).
    """
    input_spec, outputs = _keyed("model.path", static_tensors, options.path)
    # An input that is not an image is the model's fault, whatever the task says.
    _keyed("model.path", input_geometry, input_spec, name=options.path)
    labels = _keyed("model.labels", load_labels, options)
    task_key = "model.path" if options.task == "auto" else "model.task"
    return _keyed(task_key, build_codec, input_spec, outputs, options, labels, name=options.path)


def _keyed(key: str, step: Callable[..., _T], *args: object, name: str = "") -> _T:
    """Run one check of :func:`static_codec`; its ModelError (or the metadata's
    ValueError) is raised again with ``key``, and ``name`` (the model file) in front of
    a message that does not say which file it is about."""
    try:
        return step(*args)
    except (ModelError, ValueError) as exc:
        message = f"{name}: {exc}" if name and name not in str(exc) else str(exc)
        raise ModelError(message, key=key) from exc


def describe_model(options: ModelOptions) -> dict[str, object]:
    """What a configured model will get, read from its file without running it: task,
    export family, resize and input size, input normalization (and why), label source
    and warnings.

    Used by check-config and doctor so that a user sees the daemon's assumptions before
    starting it.

    Raises:
        ModelError: see :func:`static_codec`.
    """
    return describe_codec(static_codec(options))


def describe_codec(codec: Codec) -> dict[str, object]:
    """A codec's facts as :func:`describe_model` reports them (JSON-ready)."""
    return {
        "task": codec.decoder.task,
        "family": codec.decoder.family,
        "resize": codec.preprocessor.resize,
        "input": [codec.preprocessor.width, codec.preprocessor.height],
        "normalization": codec.normalization.to_json() if codec.normalization else None,
        "labels_source": codec.labels_source,
        "labels": len(codec.decoder.labels),
        "ssd_options": codec.metadata.postprocess if codec.metadata else None,
        "warnings": list(codec.warnings),
        "notes": list(codec.notes),
    }


def describe_text(described: dict[str, object]) -> str:
    """One line for humans: ``detection-yolo (yolov8), letterbox, pixel / 255 ...``."""
    norm = described["normalization"] or {}
    text = (
        f"{described['task']} ({described['family']}), {described['resize']}; input "
        f"normalization: {norm.get('reason', '?')}; labels: {described['labels_source']} "
        f"({described['labels']})"
    )
    ssd = described.get("ssd_options") or {}
    if ssd:
        text += (
            f"; SSD op: {ssd.get('num_classes')} classes, at most "
            f"{ssd.get('max_detections')} detections, scores >= "
            f"{ssd.get('nms_score_threshold', 0):g}"
        )
    return text
