"""Tier 2: model inputs edge-agent must read right or refuse clearly: the same real
weights behind the input types other exporters write, raw-pixel inputs, inputs whose
size is left to run time, and inputs that are not RGB images."""

from __future__ import annotations

import re
import struct

import cv2
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from edge_agent.config import load_config
from edge_agent.errors import ModelError
from edge_agent.inference.codec import describe_model
from edge_agent.inference.model import LoadedModel, ModelOptions
from edge_agent.inference.normalization import MINUS_ONE_ONE, RAW_PIXELS, NormSource
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.tools.doctor.report import Doctor
from models.make_models import build_color_classifier
from models.tflite_builder import BuiltinOperator, ModelBuilder, Quant, pool2d, reshape
from tests.support import reexport
from tests.support.paths import fixture_model, shared_file

TOP1 = DecodeSettings(threshold=0.0, top_k=1)
# The shared README's answers for mobilenet_v2_1.0_224_quant.
ANSWERS = {"cat.bmp": ("Egyptian cat", 0.777), "grace_hopper.bmp": ("military uniform", 0.934)}


def _mobilenet_v2_variant(data: bytes, kind: str) -> bytes:
    """The Coral model without metadata, as a uint8, int8 or float32-I/O export."""
    model = reexport.read(data)
    reexport.strip_metadata(model)
    if kind == "int8":
        reexport.requantized_input(model, schema.TensorType.INT8, (1 / 128, 0))
    elif kind == "float":
        reexport.requantized_input(model, schema.TensorType.FLOAT32)
        reexport.dequantized_output(model)
    return reexport.write(model)


@pytest.fixture(scope="module")
def mobilenet_v2_variants(tmp_path_factory):
    data = shared_file("models/mobilenet_v2_1.0_224_quant.tflite").read_bytes()
    folder = tmp_path_factory.mktemp("mobilenet_v2")
    paths = {}
    for kind in ("uint8", "int8", "float"):
        paths[kind] = folder / f"mobilenet_v2_{kind}_nometa.tflite"
        paths[kind].write_bytes(_mobilenet_v2_variant(data, kind))
    return paths


@pytest.mark.parametrize("kind", ["uint8", "int8", "float"])
def test_mobilenet_v2_gives_the_same_answers_whatever_its_input_type(mobilenet_v2_variants, kind):
    labels = str(shared_file("models/imagenet_labels.txt"))
    path = mobilenet_v2_variants[kind]
    model = LoadedModel.load(ModelOptions(path=str(path), labels=labels, settings=TOP1))
    chosen = model.codec.normalization
    # The int8 input's range and the float input's QUANTIZE op both say [-1, 1].
    assert (chosen.norm, chosen.source) == (MINUS_ONE_ONE, NormSource.IDENTITY), chosen.reason
    described = describe_model(ModelOptions(path=str(path), labels=labels))
    assert described["normalization"] == chosen.to_json()
    reference = LoadedModel.load(
        ModelOptions(path=str(mobilenet_v2_variants["uint8"]), labels=labels, settings=TOP1)
    )
    for photo, (label, score) in ANSWERS.items():
        image = cv2.imread(str(shared_file(f"images/{photo}")))
        (top,) = model.infer(image).results
        assert top.label == label and top.score == pytest.approx(score, abs=0.08)
        assert [top] == reference.infer(image).results  # the very same input tensor


def test_uint8_input_with_scale_one_gets_raw_pixels(tmp_path):
    # Real range [0, 255]: the pixels themselves, not [-1, 1] (which made every pixel 0).
    path = tmp_path / "uint8_scale1.tflite"
    path.write_bytes(build_color_classifier(np.uint8, Quant.per_tensor(1.0, 0), "raw pixels"))
    model = LoadedModel.load(ModelOptions(path=str(path), settings=DecodeSettings(0.0, 0)))
    chosen = model.codec.normalization
    assert (chosen.norm, chosen.source) == (RAW_PIXELS, NormSource.IDENTITY)
    image = cv2.imread(str(shared_file("images/cat.bmp")))
    scores = {r.id: r.score for r in model.infer(image).results}
    rgb = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)[..., ::-1]
    means = rgb.reshape(-1, 3).mean(axis=0)
    assert [scores[c] for c in range(3)] == pytest.approx(means, abs=1.0)
    assert min(scores.values()) > 50  # cat.bmp is no black image


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


def test_a_tensor_type_edge_agent_does_not_read_is_named(tmp_path):
    path = tmp_path / "float16.tflite"
    path.write_bytes(
        _retyped("color_float.tflite", schema.TensorType.FLOAT32, schema.TensorType.FLOAT16)
    )
    with pytest.raises(ModelError, match=re.escape(f"{path}: tensor 'image' has type FLOAT16")):
        describe_model(ModelOptions(path=str(path)))


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


def _per_channel_output_model() -> bytes:
    """The float channel-mean classifier quantizing its scores per channel at the end."""
    b = ModelBuilder("per-channel output")
    image = b.tensor("image", [1, 32, 32, 3], np.float32)
    pooled = b.tensor("pooled", [1, 1, 1, 3], np.float32)
    means = b.tensor("means", [1, 3], np.float32)
    b.builtin(BuiltinOperator.AVERAGE_POOL_2D, [image], [pooled], pool2d((32, 32), (32, 32)))
    shape = b.constant("shape", np.array([1, 3], np.int32))
    b.builtin(BuiltinOperator.RESHAPE, [pooled, shape], [means], reshape([1, 3]))
    per_channel = Quant((1 / 128, 1 / 64, 1 / 32), (0, 0, 0), axis=1)
    scores = b.tensor("scores", [1, 3], np.int8, per_channel)
    b.builtin(BuiltinOperator.QUANTIZE, [means], [scores])
    return b.build([image], [scores])


def _zero_std_metadata_model() -> bytes:
    """color_float_metadata.tflite with its NormalizationOptions' mean and std 0."""
    data = fixture_model("color_float_metadata.tflite").read_bytes()
    assert data.count(struct.pack("<f", 127.5)) == 2  # its mean and std, nothing else
    return data.replace(struct.pack("<f", 127.5), struct.pack("<f", 0.0))


def _retyped(name: str, old: int, new: int) -> bytes:
    """A fixture model with every tensor of type ``old`` given type ``new``."""
    model = reexport.read(fixture_model(name).read_bytes())
    for tensor in model.subgraphs[0].tensors:
        if tensor.type == old:
            tensor.type = new
    return reexport.write(model)


PER_CHANNEL = "uses per-channel quantization (3 scales); only per-tensor quantization is supported"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_gray_model, "input 'image' shape [1, 32, 32, 1] is not [1, H, W, 3]"),
        (
            lambda: fixture_model("per_channel_input.tflite").read_bytes(),
            f"tensor 'image' {PER_CHANNEL}",
        ),
        (_per_channel_output_model, f"tensor 'scores' {PER_CHANNEL}"),
        (  # a 16x8-quantized export's int16 input
            lambda: _retyped("color_int8.tflite", schema.TensorType.INT8, schema.TensorType.INT16),
            "input 'image' has unsupported dtype int16",
        ),
        (
            _zero_std_metadata_model,
            "its metadata's input normalization (mean [0.0], std [0.0]) is unusable: std must "
            "be > 0; set model.input_mean/input_std",
        ),
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
