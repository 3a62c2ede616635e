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


def read(data: bytes) -> schema.ModelT:
    """The model as editable objects."""
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))


def write(model: schema.ModelT) -> bytes:
    """The model's bytes (without any archive that was appended to the original)."""
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


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
