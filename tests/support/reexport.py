"""Models as other exporters write them, made by editing a flatbuffer without a converter.

Keras models with ``None`` height/width convert with an input size left to run time; the
TFLite converter's default export keeps float32 I/O around the quantized graph; others
give the quantized graph an int8 input. The same weights behind each must give the same
answers, or a clear refusal.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from models.tflite_builder import BuiltinOperator, ModelBuilder

METADATA_NAME = "TFLITE_METADATA"


def read(data: bytes) -> schema.ModelT:
    """The model as editable objects."""
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))


def write(model: schema.ModelT) -> bytes:
    """The model's bytes (without any archive that was appended to the original)."""
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def strip_metadata(model: schema.ModelT) -> None:
    """Drop the TFLite metadata entry (normalization options, label file)."""
    model.metadata = [
        entry
        for entry in model.metadata or []
        if (entry.name.decode() if isinstance(entry.name, bytes) else entry.name) != METADATA_NAME
    ]


def _opcode(model: schema.ModelT, builtin: int) -> int:
    """The index of a builtin operator code, added when missing."""
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and not code.customCode:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _new_tensor(
    model: schema.ModelT, like: schema.TensorT, name: str, tensor_type: int, quant: tuple | None
) -> int:
    """Add a tensor of ``like``'s shape to the first subgraph; its index."""
    graph = model.subgraphs[0]
    tensor = schema.TensorT()
    tensor.name, tensor.shape, tensor.type = name, list(like.shape), tensor_type
    model.buffers.append(schema.BufferT())
    tensor.buffer = len(model.buffers) - 1
    if quant is not None:
        tensor.quantization = schema.QuantizationParametersT()
        tensor.quantization.scale = [float(quant[0])]
        tensor.quantization.zeroPoint = [int(quant[1])]
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def requantized_input(
    model: schema.ModelT, tensor_type: int, quant: tuple[float, int] | None = None
) -> int:
    """Put a new input of ``tensor_type`` in front of the model, converted into the old
    input by a first ``QUANTIZE`` op (float32: ``quant`` None, as the converter does;
    int8 with ``(scale, zero_point)``). Returns the new input's index."""
    graph = model.subgraphs[0]
    (old,) = graph.inputs
    new = _new_tensor(model, graph.tensors[old], "input_" + str(tensor_type), tensor_type, quant)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = (
        _opcode(model, schema.BuiltinOperator.QUANTIZE),
        [new],
        [old],
    )
    graph.operators.insert(0, op)
    graph.inputs = [new]
    return new


def dequantized_output(model: schema.ModelT) -> None:
    """Add a float32 output made of the (only) quantized output by ``DEQUANTIZE``."""
    graph = model.subgraphs[0]
    (old,) = graph.outputs
    new = _new_tensor(model, graph.tensors[old], "output_float", schema.TensorType.FLOAT32, None)
    op = schema.OperatorT()
    op.opcodeIndex = _opcode(model, schema.BuiltinOperator.DEQUANTIZE)
    op.inputs, op.outputs = [old], [new]
    graph.operators.append(op)
    graph.outputs = [new]


def any_size_model(description: str) -> bytes:
    """A float "classifier" scoring the channel means of a [1, 32, 32, 3] input; its MEAN
    runs at any height and width, so :func:`dynamic_size` of it allocates."""
    b = ModelBuilder(description)
    image = b.tensor("image", [1, 32, 32, 3], np.float32)
    scores = b.tensor("scores", [1, 3], np.float32)
    axes = b.constant("axes", np.array([1, 2], np.int32))
    options = schema.ReducerOptionsT()
    options.keepDims = False
    b.builtin(BuiltinOperator.MEAN, [image, axes], [scores], options)
    return b.build([image], [scores])


def dynamic_size(data: bytes, placeholder: tuple[int, int] = (1, 1)) -> bytes:
    """The model with its input's height and width left to run time, as Keras models
    with ``None`` height/width convert: shape ``[1, h, w, C]`` with the placeholder,
    shape_signature ``[1, -1, -1, C]``."""
    model = read(data)
    graph = model.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    channels = tensor.shape[-1]
    tensor.shape = [1, *placeholder, channels]
    tensor.shapeSignature = [1, -1, -1, channels]
    return write(model)
