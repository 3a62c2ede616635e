"""The few fields of a ``.tflite`` file edge-agent reads without an interpreter.

Read with :mod:`edge_agent.inference.flatbuf` by slot, following TFLite's
``schema.fbs`` (version 3), so that neither the daemon nor its worker imports the
generated bindings (they add 6 MB of resident memory to a process that imports them).
``tests/unit/test_tflite_file.py`` checks every function against those bindings on
real models.
"""

from __future__ import annotations

from typing import NamedTuple

from flatbuffers.table import Table

from edge_agent.inference import flatbuf

# Field slots of schema.fbs tables (0-based declaration order; a union takes two).
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS, _MODEL_METADATA = 1, 2, 4, 6
_OPCODE_DEPRECATED_BUILTIN, _OPCODE_CUSTOM_CODE, _OPCODE_BUILTIN = 0, 1, 3
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_NAME, _TENSOR_QUANTIZATION = 0, 1, 3, 4
_TENSOR_SHAPE_SIGNATURE = 7
_QUANT_SCALE, _QUANT_ZERO_POINT = 2, 3
_OPERATOR_OPCODE_INDEX, _OPERATOR_INPUTS, _OPERATOR_OUTPUTS, _OPERATOR_CUSTOM_OPTIONS = 0, 1, 2, 5
QUANTIZE = 114  # BuiltinOperator
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


class RawTensor(NamedTuple):
    """A tensor as the flatbuffer declares it.

    Attributes:
        index: its index in the subgraph's tensor list.
        name: its name ("" when unnamed).
        shape: its dimensions.
        type: its ``TensorType`` code (0 float32, 2 int32, 3 uint8, 9 int8, ...).
        scales, zero_points: its quantization (empty when not quantized; one entry per
            channel when quantized per channel).
        signature: its ``shape_signature``, -1 for a dimension fixed only at run time
            (empty when the file has none, i.e. every dimension is ``shape``'s).
    """

    index: int
    name: str
    shape: tuple[int, ...]
    type: int
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    signature: tuple[int, ...] = ()


def custom_op_names(data: bytes) -> tuple[str, ...]:
    """Names of the custom operator codes, in the file's order."""
    codes = (flatbuf.string(code, _OPCODE_CUSTOM_CODE) for code in _opcodes(flatbuf.root(data)))
    return tuple(name for name in codes if name)


def _opcodes(model: Table) -> list[Table]:
    """The operator codes of a model's root table."""
    return flatbuf.tables(model, _MODEL_OPERATOR_CODES)


def _tensor(graph: Table, index: int) -> RawTensor:
    """Tensor ``index`` of a subgraph."""
    tensor = flatbuf.table_at(graph, _SUBGRAPH_TENSORS, index)
    quant = flatbuf.sub_table(tensor, _TENSOR_QUANTIZATION)
    scales = flatbuf.floats(quant, _QUANT_SCALE) if quant is not None else ()
    zero_points = flatbuf.longs(quant, _QUANT_ZERO_POINT) if quant is not None else ()
    return RawTensor(
        index=index,
        name=flatbuf.string(tensor, _TENSOR_NAME) or "",
        shape=flatbuf.ints(tensor, _TENSOR_SHAPE),
        type=flatbuf.byte(tensor, _TENSOR_TYPE),
        scales=scales,
        zero_points=zero_points,
        signature=flatbuf.ints(tensor, _TENSOR_SHAPE_SIGNATURE),
    )


def io_tensors(data: bytes) -> tuple[list[RawTensor], list[RawTensor]]:
    """``(inputs, outputs)`` of the first subgraph, in declaration order.

    Raises:
        ModelError: the file has no subgraph, or an index points outside its tensors.
    """
    graph = flatbuf.table_at(flatbuf.root(data), _MODEL_SUBGRAPHS, 0)
    inputs = [_tensor(graph, i) for i in flatbuf.ints(graph, _SUBGRAPH_INPUTS)]
    outputs = [_tensor(graph, i) for i in flatbuf.ints(graph, _SUBGRAPH_OUTPUTS)]
    return inputs, outputs


def _builtin_code(code: Table) -> int:
    """An operator code's builtin operator: codes above 127 only fit the int32 field, and
    old writers fill only the int8 one, so the larger of the two is the code."""
    return max(flatbuf.byte(code, _OPCODE_DEPRECATED_BUILTIN), flatbuf.uint(code, _OPCODE_BUILTIN))


def input_quantize(data: bytes) -> RawTensor | None:
    """The tensor a ``QUANTIZE`` operator makes of the first subgraph's only input.

    The TFLite converter's default export of a quantized model keeps float32 I/O and
    quantizes the input in its first operator; that operator's output carries the
    quantization the model was calibrated with. None when there is no such operator.
    """
    model = flatbuf.root(data)
    codes = [_builtin_code(code) for code in _opcodes(model)]
    graph = flatbuf.table_at(model, _MODEL_SUBGRAPHS, 0)
    inputs = flatbuf.ints(graph, _SUBGRAPH_INPUTS)
    if len(inputs) != 1:
        return None
    for op in flatbuf.tables(graph, _SUBGRAPH_OPERATORS):
        index = flatbuf.uint(op, _OPERATOR_OPCODE_INDEX)
        if index >= len(codes) or codes[index] != QUANTIZE:
            continue
        outputs = flatbuf.ints(op, _OPERATOR_OUTPUTS)
        if flatbuf.ints(op, _OPERATOR_INPUTS)[:1] == inputs and outputs:
            return _tensor(graph, outputs[0])
    return None


def metadata_buffer(data: bytes, name: str) -> bytes | None:
    """The contents of the buffer the model's metadata entry ``name`` points at.

    Large models keep buffers after the flatbuffer (``offset`` > 1 and ``size``); small
    ones inside it (``data``). None when no entry has that name or its buffer is empty.
    """
    model = flatbuf.root(data)
    blob = None
    for entry in flatbuf.tables(model, _MODEL_METADATA):
        if flatbuf.string(entry, _METADATA_NAME) != name:
            continue
        buffer = flatbuf.table_at(model, _MODEL_BUFFERS, flatbuf.uint(entry, _METADATA_BUFFER))
        offset = flatbuf.ulong(buffer, _BUFFER_OFFSET)
        if offset > 1:  # TFLite's converter writes 1 as a placeholder, never a place
            blob = data[offset : offset + flatbuf.ulong(buffer, _BUFFER_SIZE)]
        else:
            blob = flatbuf.ubytes(buffer, _BUFFER_DATA) or blob
    return blob


def custom_options(data: bytes, op_name: str) -> bytes | None:
    """The custom options of the last operator of custom code ``op_name`` in any
    subgraph (None when there is none, or it has no options)."""
    model = flatbuf.root(data)
    names = [flatbuf.string(code, _OPCODE_CUSTOM_CODE) for code in _opcodes(model)]
    options = None
    visited = 0
    for graph in flatbuf.tables(model, _MODEL_SUBGRAPHS):
        operators = flatbuf.tables(graph, _SUBGRAPH_OPERATORS)
        # Subgraphs may share one operator vector: bound the whole walk, not each one.
        visited += len(operators)
        if visited > flatbuf.MAX_TABLES:
            raise flatbuf.CorruptFlatbuffer(f"more than {flatbuf.MAX_TABLES} operators")
        for op in operators:
            index = flatbuf.uint(op, _OPERATOR_OPCODE_INDEX)
            if index < len(names) and names[index] == op_name:
                options = flatbuf.ubytes(op, _OPERATOR_CUSTOM_OPTIONS) or options
    return options
