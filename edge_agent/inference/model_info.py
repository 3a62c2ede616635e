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
from edge_agent.inference.tensors import NOT_QUANTIZED, QuantParams, TensorSpec

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


def _custom_ops(data: bytes) -> tuple[str, ...]:
    """Names of custom op codes, via the schema LiteRT ships, else a byte scan."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        schema = None
    if schema is not None:
        model = schema.Model.GetRootAs(data, 0)
        names = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i).CustomCode()
            if code:
                names.append(code.decode("utf-8", "replace"))
        return tuple(names)
    # Without the schema: the only custom op we must recognise is the TPU one, and its
    # name is stored verbatim in the flatbuffer's string table.
    return (EDGETPU_CUSTOM_OP,) if EDGETPU_CUSTOM_OP.encode() in data else ()


def read_model_bytes(path: str | os.PathLike[str]) -> bytes:
    """A model file's bytes.

    Raises:
        ModelError: the file is missing or unreadable (the message names it).
    """
    try:
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
    data = read_model_bytes(path)
    if not is_tflite(data[:8]):
        raise ModelError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier)")
    try:
        ops = _custom_ops(data)
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


_TENSOR_DTYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 9: np.int8}  # schema TensorType


def static_tensors(path: str | os.PathLike[str]) -> tuple[TensorSpec, list[TensorSpec]]:
    """The input and output tensors as the flatbuffer declares them, without an
    interpreter (so an Edge-TPU-only file can be described on a machine without a TPU).

    Raises:
        ModelError: unreadable, not TFLite, corrupt, not one input, or a tensor type
            edge-agent does not use; the message names the file.
    """
    inspect_model(path)
    from ai_edge_litert import schema_py_generated as schema

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            graph = schema.Model.GetRootAs(f.read(), 0).Subgraphs(0)

        def spec(index: int) -> TensorSpec:
            tensor = graph.Tensors(index)
            quant = tensor.Quantization()
            params = NOT_QUANTIZED
            if quant is not None and quant.ScaleLength() == 1:
                zp = int(quant.ZeroPoint(0)) if quant.ZeroPointLength() else 0
                params = QuantParams(float(quant.Scale(0)), zp)
            dtype = _TENSOR_DTYPES.get(tensor.Type())
            if dtype is None:
                raise ModelError(f"tensor {tensor.Name()!r} has type {tensor.Type()}")
            shape = tuple(int(d) for d in tensor.ShapeAsNumpy())
            name = (tensor.Name() or b"").decode("utf-8", "replace")
            return TensorSpec(index, name, shape, np.dtype(dtype), params)

        inputs = [spec(graph.Inputs(i)) for i in range(graph.InputsLength())]
        outputs = [spec(graph.Outputs(i)) for i in range(graph.OutputsLength())]
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc
    except Exception as exc:  # a corrupt flatbuffer raises from deep inside
        raise ModelError(f"{path}: corrupt TFLite flatbuffer: {exc}") from exc
    if len(inputs) != 1:
        raise ModelError(f"{path}: expected exactly one input tensor, found {len(inputs)}")
    return inputs[0], outputs
