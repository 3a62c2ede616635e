"""The pipeline-side halves of a model: preprocessing into the input tensor and decoding.

The daemon splits a model across processes: the engine runs in the crash-isolated worker
(:mod:`edge_agent.inference.worker`), while the codec built here preprocesses frames
into shared memory and decodes the worker's outputs in the pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from edge_agent.inference.labels import label_count_warning, read_labels
from edge_agent.inference.postprocess import Decoder, default_resize
from edge_agent.inference.preprocess import Preprocessor, input_geometry
from edge_agent.inference.tensors import TensorSpec

if TYPE_CHECKING:  # the options and the worker import this module's users, not it
    from edge_agent.inference.model import ModelOptions
    from edge_agent.inference.worker import WorkerInfo

logger = logging.getLogger(__name__)


class Codec(NamedTuple):
    """The pipeline-side halves of a model: preprocessing and decoding."""

    preprocessor: Preprocessor
    decoder: Decoder
    warnings: tuple[str, ...]


def load_labels(options: ModelOptions) -> dict[int, str]:
    """The label map of a model (empty when no file is configured).

    Raises:
        ModelError: the label file cannot be read.
    """
    return read_labels(options.labels) if options.labels else {}


def build_codec(
    input_spec: TensorSpec,
    output_specs: Sequence[TensorSpec],
    options: ModelOptions,
    labels: dict[int, str],
) -> Codec:
    """Make the preprocessor and decoder for a model's tensors.

    Raises:
        ModelError: the input is not an image tensor, or the outputs do not fit the task.
    """
    height, width = input_geometry(input_spec)
    decoder = Decoder(
        output_specs,
        (width, height),
        task=options.task,
        labels=labels,
        settings=options.settings,
        labels_filter=options.labels_filter,
    )
    resize = default_resize(decoder.task) if options.resize == "auto" else options.resize
    pre = Preprocessor(input_spec, resize=resize, mean=options.input_mean, std=options.input_std)
    warnings = []
    if labels and decoder.num_classes:
        warning = label_count_warning(labels, decoder.num_classes)
        if warning:
            warnings.append(f"{options.labels}: {warning}")
    return Codec(pre, decoder, tuple(warnings))


def make_codec(info: WorkerInfo, options: ModelOptions) -> Codec:
    """Build the codec for a running worker's tensors, logging its warnings once.

    Raises:
        ModelError: the input is not an image tensor, or the outputs do not fit the task.
    """
    codec = build_codec(info.input, info.outputs, options, load_labels(options))
    for warning in codec.warnings:
        logger.warning("model %s: %s", options.path, warning)
    return codec
