"""Tier 1: the field-by-field TFLite reader against LiteRT's generated bindings, on every
fixture model and every real model in ../shared, and on damaged files."""

from __future__ import annotations

import re
import struct

import pytest

from edge_agent.errors import ModelError
from edge_agent.inference import flatbuf, tflite_file
from edge_agent.inference.model_info import static_tensors
from edge_agent.inference.model_metadata import METADATA_NAME, POSTPROCESS_OP, read_model_metadata
from tests.support.daemon import python_stdout
from tests.support.paths import FIXTURE_MODELS, SHARED

MODELS = sorted(p for p in FIXTURE_MODELS.glob("*.tflite") if p.name != "not_a_model.tflite")
SHARED_MODELS = sorted((SHARED / "models").glob("*.tflite"))


def _reference(data: bytes):
    """What the generated bindings read from the same file."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    model = schema.Model.GetRootAs(data, 0)
    codes = [model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())]
    graph = model.Subgraphs(0)

    def tensor(index):
        t = graph.Tensors(index)
        q = t.Quantization()
        scales = tuple(float(q.Scale(i)) for i in range(q.ScaleLength())) if q else ()
        zps = tuple(int(q.ZeroPoint(i)) for i in range(q.ZeroPointLength())) if q else ()
        shape = tuple(int(t.Shape(i)) for i in range(t.ShapeLength()))
        name = (t.Name() or b"").decode("utf-8", "replace")
        signature = tuple(int(t.ShapeSignature(i)) for i in range(t.ShapeSignatureLength()))
        return tflite_file.RawTensor(index, name, shape, t.Type(), scales, zps, signature)

    inputs = [tensor(graph.Inputs(i)) for i in range(graph.InputsLength())]
    outputs = [tensor(graph.Outputs(i)) for i in range(graph.OutputsLength())]
    blob = None
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name() == METADATA_NAME.encode():
            buffer = model.Buffers(model.Metadata(i).Buffer())
            if buffer.Offset() > 1:  # 1 is the converter's placeholder
                blob = data[buffer.Offset() : buffer.Offset() + buffer.Size()]
            elif buffer.DataLength():
                blob = buffer.DataAsNumpy().tobytes()
    options = None
    for g in range(model.SubgraphsLength()):
        sub = model.Subgraphs(g)
        for o in range(sub.OperatorsLength()):
            op = sub.Operators(o)
            if codes[op.OpcodeIndex()] == POSTPROCESS_OP.encode() and op.CustomOptionsLength():
                options = op.CustomOptionsAsNumpy().tobytes()
    names = tuple(c.decode() for c in codes if c)
    return names, inputs, outputs, blob, options, _reference_input_quantize(model, schema)


def _reference_input_quantize(model, schema):
    """What the bindings say the first QUANTIZE op makes of the only input."""
    graph = model.Subgraphs(0)
    if graph.InputsLength() != 1:
        return None
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.QUANTIZE and op.Inputs(0) == graph.Inputs(0):
            return op.Outputs(0)
    return None


def _ours(data: bytes):
    inputs, outputs = tflite_file.io_tensors(data)
    return (
        tflite_file.custom_op_names(data),
        inputs,
        outputs,
        tflite_file.metadata_buffer(data, METADATA_NAME),
        tflite_file.custom_options(data, POSTPROCESS_OP),
        getattr(tflite_file.input_quantize(data), "index", None),
    )


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_fixture_models_read_as_the_bindings_read_them(path):
    data = path.read_bytes()
    assert _ours(data) == _reference(data)


@pytest.mark.parametrize("name", [p.name for p in SHARED_MODELS] or ["(none)"])
def test_real_models_read_as_the_bindings_read_them(name):
    path = SHARED / "models" / name
    if not path.is_file():
        pytest.skip(f"no real models under {SHARED} (set EDGE_AGENT_SHARED)")
    data = path.read_bytes()
    ours = _ours(data)
    assert ours == _reference(data)
    assert ours[1], "every real model has an input"


def test_the_fields_that_matter_are_really_read():
    # Not only equal to the bindings: the edge-TPU op, per-tensor quantization, the
    # metadata buffer and the SSD options are each found in a file that has them.
    edgetpu = tflite_file.custom_op_names(
        (FIXTURE_MODELS / "color_uint8_edgetpu.tflite").read_bytes()
    )
    assert "edgetpu-custom-op" in edgetpu
    (image,), _ = tflite_file.io_tensors((FIXTURE_MODELS / "color_uint8.tflite").read_bytes())
    assert image.type == 3 and len(image.scales) == 1 and image.shape[0] == 1
    meta = (FIXTURE_MODELS / "color_float_metadata.tflite").read_bytes()
    assert tflite_file.metadata_buffer(meta, METADATA_NAME)[4:8] == b"M001"
    ssd = (FIXTURE_MODELS / "ssd_postprocess.tflite").read_bytes()
    assert tflite_file.custom_options(ssd, POSTPROCESS_OP)


def test_a_float_inputs_quantize_op_and_a_dynamic_size_are_read():
    reexport = pytest.importorskip("tests.support.reexport")
    model = reexport.read((FIXTURE_MODELS / "color_uint8.tflite").read_bytes())
    new = reexport.requantized_input(model, 0)  # float32 in front of the uint8 input
    data = reexport.write(model)
    quantized = tflite_file.input_quantize(data)
    assert (quantized.name, quantized.type) == ("image", 3)
    assert (quantized.scales, quantized.zero_points) == ((1 / 128,), (128,))
    (image,), _ = tflite_file.io_tensors(data)
    assert (image.index, image.type, image.signature) == (new, 0, ())
    assert _ours(data) == _reference(data)
    dynamic = reexport.dynamic_size((FIXTURE_MODELS / "color_float.tflite").read_bytes())
    (image,), _ = tflite_file.io_tensors(dynamic)
    assert (image.shape, image.signature) == ((1, 1, 1, 3), (1, -1, -1, 3))
    assert _ours(dynamic) == _reference(dynamic)
    assert tflite_file.input_quantize(dynamic) is None


def test_a_vector_longer_than_the_file_is_refused_at_once(tmp_path):
    data = bytearray((FIXTURE_MODELS / "color_uint8.tflite").read_bytes())
    # The subgraph's inputs vector (slot 1) claims 2**30 entries.
    graph = flatbuf.table_at(flatbuf.root(data), 2, 0)
    pos = flatbuf.field(graph, 1)
    at = graph.Vector(pos - graph.Pos) - 4  # its length precedes its entries
    assert struct.unpack_from("<i", data, at) == (1,)
    data[at : at + 4] = struct.pack("<i", 2**30)
    path = tmp_path / "long_vector.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="runs past the end"):
        tflite_file.io_tensors(bytes(data))
    with pytest.raises(ModelError, match=re.escape(str(path))):
        static_tensors(path)


def test_a_vector_of_millions_of_tables_is_refused_before_it_is_built():
    # The operator-code vector claims 2**21 entries and the file is padded to hold them:
    # every entry is in bounds, so only the cap stops the reader building them all.
    data = bytearray((FIXTURE_MODELS / "color_uint8.tflite").read_bytes())
    model = flatbuf.root(data)
    pos = flatbuf.field(model, 1)
    at = model.Vector(pos - model.Pos) - 4
    data[at : at + 4] = struct.pack("<i", 2**21)
    data.extend(bytes(4 * 2**21))
    with pytest.raises(flatbuf.CorruptFlatbuffer, match="at most"):
        tflite_file.custom_op_names(bytes(data))


def test_corrupt_metadata_is_one_clear_error(tmp_path):
    data = bytearray((FIXTURE_MODELS / "color_float_metadata.tflite").read_bytes())
    blob = tflite_file.metadata_buffer(bytes(data), METADATA_NAME)
    at = data.find(blob[:64])
    assert at > 0
    data[at + 8 : at + 64] = b"\xff" * 56  # the metadata's root table, garbled
    path = tmp_path / "garbled.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=re.escape(f"{path}: corrupt TFLite metadata")):
        read_model_metadata(path)


@pytest.mark.parametrize("cut", [8, 64, 400])
def test_truncated_models_give_a_model_error_naming_the_file(tmp_path, cut):
    path = tmp_path / "cut.tflite"
    path.write_bytes((FIXTURE_MODELS / "color_uint8.tflite").read_bytes()[:cut])
    with pytest.raises(ModelError, match=re.escape(str(path))):
        static_tensors(path)


def test_reading_a_model_needs_neither_litert_nor_its_generated_bindings():
    # The bindings cost 6 MB of resident memory in the daemon and in its worker; and a
    # box with tflite-runtime alone (the libedgetpu ABI) has no LiteRT at all.
    code = (
        "import sys\n"
        "sys.modules['ai_edge_litert'] = None  # any import of it raises ImportError\n"
        "from edge_agent.inference.model_info import inspect_model, static_tensors\n"
        "from edge_agent.inference.model_metadata import read_model_metadata\n"
        f"p = {str(FIXTURE_MODELS / 'color_float_metadata.tflite')!r}\n"
        "inspect_model(p)\n"
        "print(static_tensors(p)[0].shape)\n"
        "meta = read_model_metadata(p)\n"
        "print(meta.mean, meta.std, sorted(meta.labels.values()))\n"
    )
    out = python_stdout(code)
    assert out.splitlines() == [
        "(1, 32, 32, 3)",
        "(127.5,) (127.5,) ['azure', 'crimson', 'lime']",
    ]


def test_reading_a_model_with_litert_installed_leaves_its_bindings_unimported():
    pytest.importorskip("ai_edge_litert")
    code = (
        "import sys\n"
        "import ai_edge_litert.interpreter\n"
        "from edge_agent.inference.model_info import inspect_model, static_tensors\n"
        "from edge_agent.inference.model_metadata import read_model_metadata\n"
        f"p = {str(FIXTURE_MODELS / 'ssd_postprocess.tflite')!r}\n"
        "inspect_model(p); static_tensors(p); read_model_metadata(p)\n"
        "print(sorted(m for m in sys.modules if 'schema' in m and 'litert' in m))\n"
    )
    out = python_stdout(code)
    assert out.strip() == "[]"
