"""Tier 2: model inputs edge-agent must read right or refuse clearly: the same real
weights behind the input types other exporters write, raw-pixel inputs, inputs whose
size is left to run time, and inputs that are not RGB images."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edge_agent.config import load_config
from edge_agent.errors import ModelError
from edge_agent.inference.codec import describe_model
from edge_agent.inference.model import LoadedModel, ModelOptions
from edge_agent.tools.doctor.report import Doctor
from models.make_models import build_color_classifier
from models.tflite_builder import BuiltinOperator, ModelBuilder, Quant, pool2d, reshape
from tests.support import reexport


def test_an_input_size_left_to_run_time_is_refused_everywhere(tmp_path):
    path = tmp_path / "dynamic.tflite"
    path.write_bytes(reexport.dynamic_size(reexport.any_size_model("dynamic input")))
    options = ModelOptions(path=str(path))
    expected = re.escape(
        f"{path}: input 'image' has a dynamic shape (shape_signature [1, -1, -1, 3]"
    )
    # Read from the file (check-config, doctor) and loaded by an interpreter (infer, run,
    # a model update's validation: all build their codec the same way).
    with pytest.raises(ModelError, match=expected) as raised:
        describe_model(options)
    assert "export the model with a fixed input size" in str(raised.value)
    with pytest.raises(ModelError, match=expected):
        LoadedModel.load(options)


def test_the_doctor_names_the_file_of_a_dynamic_input_once(tmp_path):
    model = tmp_path / "dynamic.tflite"
    model.write_bytes(reexport.dynamic_size(reexport.any_size_model("dynamic input")))
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\npath = "{model}"\n')
    doctor = Doctor(str(config), explicit=True)
    doctor.model(load_config(str(config)))  # loads the model in a child, as `doctor` does
    (check,) = doctor.report.failed()
    assert check.detail.startswith(f"{model}: input 'image' has a dynamic shape")
    assert check.detail.count(str(model)) == 1


def test_a_dynamic_batch_alone_runs_as_one(tmp_path):
    model = reexport.read(reexport.any_size_model("dynamic batch"))
    graph = model.subgraphs[0]
    graph.tensors[graph.inputs[0]].shapeSignature = [-1, 32, 32, 3]
    path = tmp_path / "batch.tflite"
    path.write_bytes(reexport.write(model))
    assert describe_model(ModelOptions(path=str(path)))["input"] == [32, 32]
    assert LoadedModel.load(ModelOptions(path=str(path))).codec.preprocessor.width == 32


def _gray_model() -> bytes:
    b = ModelBuilder("gray input")
    quant = Quant.per_tensor(1 / 255, 0)
    image = b.tensor("image", [1, 32, 32, 1], np.uint8, quant)
    pooled = b.tensor("pooled", [1, 1, 1, 1], np.uint8, quant)
    scores = b.tensor("scores", [1, 1], np.uint8, quant)
    b.builtin(BuiltinOperator.AVERAGE_POOL_2D, [image], [pooled], pool2d((32, 32), (32, 32)))
    shape = b.constant("shape", np.array([1, 1], np.int32))
    b.builtin(BuiltinOperator.RESHAPE, [pooled, shape], [scores], reshape([1, 1]))
    return b.build([image], [scores])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_gray_model, "input 'image' shape [1, 32, 32, 1] is not [1, H, W, 3]"),
        (
            lambda: build_color_classifier(np.uint8, None, "uint8 without quantization"),
            "input 'image' is uint8 but has no quantization parameters",
        ),
    ],
)
def test_unusable_inputs_are_refused_naming_the_model_file(tmp_path, make, message):
    path = tmp_path / "unusable.tflite"
    path.write_bytes(make())
    for load in (describe_model, LoadedModel.load):
        with pytest.raises(ModelError, match=re.escape(f"{path}: {message}")):
            load(ModelOptions(path=str(path)))
