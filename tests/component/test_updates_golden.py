"""Golden input/output health check with a real model on the CPU runtime."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.errors import ModelUpdateError
from edge_agent.inference.backends.base import ModelRequest
from edge_agent.inference.backends.cpu import CpuBackend
from edge_agent.tools.release import operator
from edge_agent.updates.golden import check_golden, load_golden, make_golden
from tests.support.paths import shared_file


def run(model, inp):
    session = CpuBackend().open(ModelRequest(str(model), None, "cpu", 1))
    session.set_input(inp)
    session.invoke()
    return session.output_arrays()


def test_golden_pair_round_trips_through_a_packed_release(tmp_path):
    model = shared_file("models/mobilenet_v1_0.25_128_quant.tflite")
    gin, gout = make_golden(model, tmp_path / "g", seed=3)
    inp = np.load(gin)
    assert inp.shape == (1, 128, 128, 3) and inp.dtype == np.uint8
    assert len(np.unique(inp)) > 200  # a seeded random image, not a constant
    operator.keygen(tmp_path / "k", tmp_path / "k.pub")
    rel = operator.pack(
        tmp_path / "rel", name="m", version=1, model=model, golden_input=gin,
        golden_output=gout, golden_tolerance=2, private_key=tmp_path / "k",
    )  # fmt: skip
    manifest = operator.verify(rel, [tmp_path / "k.pub"])
    golden = load_golden(rel, manifest)
    assert golden.tolerance == 2.0 and golden.outputs[0].shape == (1, 1001)
    assert check_golden(run(model, golden.input), golden, label="m@1") <= 2.0
    # Another model (or a broken one) on the same input does not pass.
    other = shared_file("models/mobilenet_v2_1.0_224_quant.tflite")
    with pytest.raises(ModelUpdateError) as e:
        check_golden(run(other, np.zeros((1, 224, 224, 3), np.uint8)), golden)
    assert e.value.reason == "health_check_failed"
    shifted = [golden.outputs[0].astype(np.int32) + 3]
    with pytest.raises(ModelUpdateError, match="differs from golden by 3"):
        check_golden(shifted, golden)
    with pytest.raises(ModelUpdateError, match="2 outputs"):
        check_golden(golden.outputs * 2, golden)


def test_release_without_golden_files(tmp_path):
    model = shared_file("models/mobilenet_v1_0.25_128_quant.tflite")
    operator.keygen(tmp_path / "k", tmp_path / "k.pub")
    rel = operator.pack(
        tmp_path / "rel", name="m", version=1, model=model, private_key=tmp_path / "k"
    )
    assert load_golden(rel, operator.verify(rel, [tmp_path / "k.pub"])) is None


def test_unreadable_golden_files(tmp_path):
    model = shared_file("models/mobilenet_v1_0.25_128_quant.tflite")
    (tmp_path / "gi.npy").write_bytes(b"not numpy")
    (tmp_path / "go.npz").write_bytes(b"not numpy either")
    operator.keygen(tmp_path / "k", tmp_path / "k.pub")
    rel = operator.pack(
        tmp_path / "rel", name="m", version=1, model=model, golden_input=tmp_path / "gi.npy",
        golden_output=tmp_path / "go.npz", private_key=tmp_path / "k",
    )  # fmt: skip
    with pytest.raises(ModelUpdateError) as e:
        load_golden(rel, operator.verify(rel, [tmp_path / "k.pub"]))
    assert e.value.reason == "bad_golden"
