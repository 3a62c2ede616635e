"""Static facts about a model file, read from its flatbuffer without an interpreter.

Used to reject non-TFLite files early, to tell an Edge-TPU-compiled model from a CPU
one, and to find the CPU twin of ``foo_edgetpu.tflite``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge_agent.errors import ModelError
from edge_agent.fileguard import check_regular
from edge_agent.inference import tflite_file
from edge_agent.inference.tensors import TensorSpec, per_tensor_quant

TFLITE_IDENTIFIER = b"TFL3"
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
EDGETPU_SUFFIX = "_edgetpu"
# TFLite's SSD post-processing op drops the last class when the interpreter runs it with
# several threads (tensorflow/tensorflow#56058; seen here with 2 threads on LiteRT 2.3 and
# tflite-runtime 2.14), so models that contain it are run single-threaded.
SINGLE_THREAD_OPS = frozenset({"TFLite_Detection_PostProcess"})


class ModelFacts(NamedTuple):
    """What the flatbuffer says about a model.

    Attributes:
        path: the file.
        size: its size in bytes.
        custom_ops: names of the custom operators it uses.
        edgetpu: True when it contains ``edgetpu-custom-op`` (needs the TPU delegate).
    """

    path: str
    size: int
    custom_ops: tuple[str, ...]

    @property
    def edgetpu(self) -> bool:
        """True when the model only runs with the Edge TPU delegate."""
        return EDGETPU_CUSTOM_OP in self.custom_ops

    @property
    def single_threaded(self) -> bool:
        """True when the model has an op that gives wrong results with several threads."""
        return not SINGLE_THREAD_OPS.isdisjoint(self.custom_ops)


def is_tflite(head: bytes) -> bool:
    """True when the first bytes carry the TFLite flatbuffer identifier at offset 4."""
    return len(head) >= 8 and head[4:8] == TFLITE_IDENTIFIER


def read_model_bytes(path: str | os.PathLike[str]) -> bytes:
    """A model file's bytes.

    Raises:
        ModelError: the file is missing, unreadable or no regular file (the message
            names it).
    """
    try:
        check_regular(path)
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ModelError(f"{os.fspath(path)}: cannot read model: {exc.strerror or exc}") from exc


def inspect_model(path: str | os.PathLike[str]) -> ModelFacts:
    """Read a model file's static facts.

    Args:
        path: the ``.tflite`` file.

    Returns:
        Its ModelFacts.

    Raises:
        ModelError: the file is missing/unreadable, or is not a TFLite flatbuffer.
    """
    path = os.fspath(path)
    return _facts(path, read_model_bytes(path))


def _facts(path: str, data: bytes) -> ModelFacts:
    """The ModelFacts of a model file's bytes (see inspect_model)."""
    if not is_tflite(data[:8]):
        raise ModelError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier)")
    try:
        ops = tflite_file.custom_op_names(data)
    except Exception as exc:  # a truncated/corrupt flatbuffer raises from deep inside
        raise ModelError(f"{path}: corrupt TFLite flatbuffer: {exc}") from exc
    return ModelFacts(path=path, size=len(data), custom_ops=ops)


def cpu_twin_candidates(model_path: str | os.PathLike[str]) -> list[Path]:
    """Where the CPU twin of an Edge TPU model is expected: foo_edgetpu.tflite -> foo.tflite."""
    path = Path(model_path)
    stem = path.stem
    if stem.endswith(EDGETPU_SUFFIX):
        return [path.with_name(stem[: -len(EDGETPU_SUFFIX)] + path.suffix)]
    return []


def edgetpu_twin_candidates(model_path: str | os.PathLike[str]) -> list[Path]:
    """Where the Edge TPU build of a CPU model is expected: foo.tflite -> foo_edgetpu.tflite."""
    path = Path(model_path)
    if path.stem.endswith(EDGETPU_SUFFIX):
        return []
    return [path.with_name(path.stem + EDGETPU_SUFFIX + path.suffix)]


# schema.fbs TensorType: the codes edge-agent reads (int16 as the interpreter reports it:
# a 16x8-quantized model's input is refused by the preprocessing, as when it runs), and
# the names of others a model may use, for messages.
_TENSOR_DTYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 7: np.int16, 9: np.int8}
_OTHER_TYPES = {1: "FLOAT16", 4: "INT64", 5: "STRING", 6: "BOOL", 10: "FLOAT64", 18: "BFLOAT16"}


def tensor_spec(path: str, tensor: tflite_file.RawTensor) -> TensorSpec:
    """A flatbuffer tensor as the TensorSpec an interpreter would report.

    Raises:
        ModelError: a tensor type edge-agent does not use (the message names ``path``).
    """
    try:  # refused as the interpreter's tensor details are (runtime.Session)
        params = per_tensor_quant(tensor.name, tensor.scales, tensor.zero_points)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc
    dtype = _TENSOR_DTYPES.get(tensor.type)
    if dtype is None:
        name = _OTHER_TYPES.get(tensor.type, f"code {tensor.type}")
        raise ModelError(
            f"{path}: tensor {tensor.name!r} has type {name}, which edge-agent does not read "
            "(float32, int32, int16, uint8, int8)"
        )
    return TensorSpec(
        tensor.index, tensor.name, tensor.shape, np.dtype(dtype), params, tensor.signature
    )


def static_tensors(path: str | os.PathLike[str]) -> tuple[TensorSpec, list[TensorSpec]]:
    """The input and output tensors as the flatbuffer declares them, without an
    interpreter (so an Edge-TPU-only file can be described on a machine without a TPU).

    Raises:
        ModelError: unreadable, not TFLite, corrupt, not one input, or a tensor type
            edge-agent does not use; the message names the file.
    """
    path = os.fspath(path)
    data = read_model_bytes(path)  # read once: the file may be swapped by an update
    _facts(path, data)  # not TFLite, or corrupt op codes: inspect_model's errors
    try:
        raw_inputs, raw_outputs = tflite_file.io_tensors(data)
    except Exception as exc:  # a corrupt flatbuffer raises from deep inside
        raise ModelError(f"{path}: corrupt TFLite flatbuffer: {exc}") from exc
    inputs = [tensor_spec(path, t) for t in raw_inputs]
    outputs = [tensor_spec(path, t) for t in raw_outputs]
    if len(inputs) != 1:
        raise ModelError(f"{path}: expected exactly one input tensor, found {len(inputs)}")
    return inputs[0], outputs
