"""Write small TFLite models with the flatbuffer schema that ai_edge_litert ships.

Only the object API of ``ai_edge_litert.schema_py_generated`` is used (ModelT, SubGraphT,
TensorT, ...), so the files are ordinary schema-v3 TFLite models that every runtime
(LiteRT, tflite-runtime, libedgetpu's delegate) parses. Building is deterministic: the same
calls give the same bytes, which lets ``make_models.py`` be re-run without churn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

BuiltinOperator = schema.BuiltinOperator
TFLITE_SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
# The converter aligns constant buffers to 16 bytes; doing the same keeps SIMD kernels and
# strict-alignment CPUs (32-bit ARM) away from unaligned float loads.
BUFFER_ALIGNMENT = 16

_TENSOR_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.int32): schema.TensorType.INT32,
}


class Quant(NamedTuple):
    """Affine quantization of one tensor: per-tensor when the lists have one entry."""

    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    axis: int = 0

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int) -> Quant:
        """Return per-tensor parameters ``real = (q - zero_point) * scale``."""
        return cls((float(scale),), (int(zero_point),))


class _AlignedBufferT(schema.BufferT):
    """A BufferT whose bytes are written 16-byte aligned (BufferT.Pack aligns to 1)."""

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 - schema API name
        """Write the buffer table; ``self.data`` is raw bytes or None."""
        data = None
        if self.data is not None:
            raw = bytes(self.data)
            builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
            builder.head -= len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


def _options_type(options: object) -> int:
    """Map an options object (e.g. Pool2DOptionsT) to its BuiltinOptions union tag."""
    name = type(options).__name__
    if not name.endswith("T"):
        raise TypeError(f"not a schema options object: {name}")
    return getattr(schema.BuiltinOptions, name[:-1])


class ModelBuilder:
    """Collects tensors and operators of a one-subgraph model, then serializes it.

    Args:
        description: stored in the model's ``description`` field.
    """

    def __init__(self, description: str) -> None:
        self._description = description
        self._tensors: list[schema.TensorT] = []
        self._operators: list[schema.OperatorT] = []
        self._opcodes: list[tuple[int, str | None, int]] = []
        # Buffer 0 is the schema's always-present empty buffer for non-constant tensors.
        self._buffers: list[_AlignedBufferT] = [_AlignedBufferT()]

    def tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: type | np.dtype,
        quant: Quant | None = None,
    ) -> int:
        """Add a non-constant tensor.

        Args:
            name: tensor name, as the interpreters report it.
            shape: static shape.
            dtype: numpy dtype (float32, uint8, int8, int32).
            quant: quantization parameters, or None for an unquantized tensor.

        Returns:
            The tensor index.
        """
        return self._add_tensor(name, shape, np.dtype(dtype), quant, buffer=0)

    def constant(self, name: str, value: np.ndarray, quant: Quant | None = None) -> int:
        """Add a constant tensor whose data is stored in the model.

        Args:
            name: tensor name.
            value: the data; its dtype and shape become the tensor's.
            quant: quantization parameters for integer constants.

        Returns:
            The tensor index.
        """
        value = np.ascontiguousarray(value)
        buffer = _AlignedBufferT()
        buffer.data = value.astype(value.dtype.newbyteorder("<")).tobytes()
        self._buffers.append(buffer)
        return self._add_tensor(name, value.shape, value.dtype, quant, len(self._buffers) - 1)

    def _add_tensor(
        self, name: str, shape: Sequence[int], dtype: np.dtype, quant: Quant | None, buffer: int
    ) -> int:
        """Append a TensorT and return its index."""
        tensor = schema.TensorT()
        tensor.name = name
        tensor.shape = [int(d) for d in shape]
        tensor.type = _TENSOR_TYPES[dtype]
        tensor.buffer = buffer
        if quant is not None:
            params = schema.QuantizationParametersT()
            params.scale = [float(s) for s in quant.scales]
            params.zeroPoint = [int(z) for z in quant.zero_points]
            params.quantizedDimension = quant.axis
            tensor.quantization = params
        self._tensors.append(tensor)
        return len(self._tensors) - 1

    def _opcode(self, builtin: int, custom: str | None, version: int) -> int:
        """Return the index of an operator code, adding it on first use."""
        key = (builtin, custom, version)
        if key not in self._opcodes:
            self._opcodes.append(key)
        return self._opcodes.index(key)

    def builtin(
        self,
        op: int,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: object | None = None,
        version: int = 1,
    ) -> None:
        """Add a builtin operator.

        Args:
            op: a ``BuiltinOperator`` value.
            inputs: input tensor indices (-1 for an omitted optional input).
            outputs: output tensor indices.
            options: the matching ``...OptionsT`` object, if the op has options.
            version: operator version (int8 kernels are version 2 for most ops).
        """
        operator = schema.OperatorT()
        operator.opcodeIndex = self._opcode(op, None, version)
        operator.inputs = list(inputs)
        operator.outputs = list(outputs)
        if options is not None:
            operator.builtinOptionsType = _options_type(options)
            operator.builtinOptions = options
        self._operators.append(operator)

    def custom(
        self, code: str, inputs: Sequence[int], outputs: Sequence[int], options: bytes
    ) -> None:
        """Add a custom operator (resolved by name at interpreter build time).

        Args:
            code: the custom op name, e.g. ``TFLite_Detection_PostProcess``.
            inputs: input tensor indices.
            outputs: output tensor indices.
            options: the op's custom_options bytes (flexbuffer for the stock custom ops).
        """
        operator = schema.OperatorT()
        operator.opcodeIndex = self._opcode(BuiltinOperator.CUSTOM, code, 1)
        operator.inputs = list(inputs)
        operator.outputs = list(outputs)
        operator.customOptions = np.frombuffer(options, dtype=np.uint8)
        operator.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
        self._operators.append(operator)

    def build(
        self,
        inputs: Sequence[int],
        outputs: Sequence[int],
        signature: tuple[str, dict[str, int], dict[str, int]] | None = None,
        metadata: bytes | None = None,
    ) -> bytes:
        """Serialize the model.

        Args:
            inputs: the subgraph's input tensor indices, in order.
            outputs: the subgraph's output tensor indices, in the order the runtimes report.
            signature: optional ``(key, {input name: tensor}, {output name: tensor})``, as
                converters write for SavedModel signatures (``serving_default``).
            metadata: a ModelMetadata flatbuffer stored as ``TFLITE_METADATA``.

        Returns:
            The ``.tflite`` file contents.
        """
        subgraph = schema.SubGraphT()
        subgraph.name = "main"
        subgraph.tensors = self._tensors
        subgraph.operators = self._operators
        subgraph.inputs = list(inputs)
        subgraph.outputs = list(outputs)

        model = schema.ModelT()
        model.version = TFLITE_SCHEMA_VERSION
        model.description = self._description
        model.subgraphs = [subgraph]
        model.buffers = self._buffers
        model.operatorCodes = []
        for builtin, custom, version in self._opcodes:
            code = schema.OperatorCodeT()
            # Codes above 127 only fit the int32 field; old readers use the int8 one.
            code.deprecatedBuiltinCode = min(builtin, 127)
            code.builtinCode = builtin
            code.customCode = custom
            code.version = version
            model.operatorCodes.append(code)
        if signature is not None:
            key, sig_inputs, sig_outputs = signature
            definition = schema.SignatureDefT()
            definition.signatureKey = key
            definition.inputs = [_tensor_map(n, i) for n, i in sig_inputs.items()]
            definition.outputs = [_tensor_map(n, i) for n, i in sig_outputs.items()]
            model.signatureDefs = [definition]

        if metadata is not None:
            buffer = _AlignedBufferT()
            buffer.data = metadata
            model.buffers = [*self._buffers, buffer]
            entry = schema.MetadataT()
            entry.name = "TFLITE_METADATA"
            entry.buffer = len(model.buffers) - 1
            model.metadata = [entry]

        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())


def _tensor_map(name: str, index: int) -> schema.TensorMapT:
    """One signature entry: a name bound to a tensor index."""
    entry = schema.TensorMapT()
    entry.name = name
    entry.tensorIndex = index
    return entry


def pool2d(size: tuple[int, int], stride: tuple[int, int]) -> schema.Pool2DOptionsT:
    """Options of a VALID-padded 2-D pool with the given (height, width) filter and stride."""
    options = schema.Pool2DOptionsT()
    options.padding = schema.Padding.VALID
    options.filterHeight, options.filterWidth = size
    options.strideH, options.strideW = stride
    return options


def conv2d_1x1() -> schema.Conv2DOptionsT:
    """Options of a 1x1, stride-1 convolution without fused activation."""
    options = schema.Conv2DOptionsT()
    options.padding = schema.Padding.VALID
    options.strideH = options.strideW = 1
    return options


def reshape(shape: Sequence[int]) -> schema.ReshapeOptionsT:
    """Options of a RESHAPE to a static shape."""
    options = schema.ReshapeOptionsT()
    options.newShape = [int(d) for d in shape]
    return options


def concatenation(axis: int) -> schema.ConcatenationOptionsT:
    """Options of a CONCATENATION along ``axis``."""
    options = schema.ConcatenationOptionsT()
    options.axis = axis
    return options


def flexbuffer_map(values: dict[str, bool | int | float]) -> bytes:
    """Encode a flat map as a flexbuffer, the format of stock custom op options.

    Keys are written sorted so the bytes do not depend on dict order; Python types pick the
    flexbuffer type (bool, int, float), which is what the kernels' ``AsBool``/``AsInt32``/
    ``AsFloat`` accessors expect.
    """
    builder = flexbuffers.Builder()
    with builder.Map():
        for key in sorted(values):
            value = values[key]
            if isinstance(value, bool):
                builder.Bool(key, value)
            elif isinstance(value, int):
                builder.Int(key, value)
            else:
                builder.Float(key, float(value))
    return bytes(builder.Finish())
