"""Tier 2: backend selection and Edge TPU fallback, with the TPU replaced by a test double.

No Edge TPU exists on these machines: FakeTpu plays the hardware (present, failing,
vanishing, returning) while the models and interpreters are real.
"""

import numpy as np
import pytest

from edge_agent.errors import BackendUnavailable, ModelError
from edge_agent.inference.backends.base import ModelRequest
from edge_agent.inference.backends.cpu import CpuBackend
from edge_agent.inference.backends.edgetpu import EdgeTpuBackend
from edge_agent.inference.devices import delegate_library, parse_device_spec
from edge_agent.inference.engine import Engine, candidate_backends
from tests.support.fake_tpu import FakeTpu, write_state
from tests.support.paths import fixture_model

TPU_MODEL = str(fixture_model("color_uint8_edgetpu.tflite"))
CPU_MODEL = str(fixture_model("color_uint8.tflite"))


def engine(tpu, device="auto", model=TPU_MODEL):
    request = ModelRequest(model, None, device, 1)
    return Engine.open(request, [EdgeTpuBackend(tpu), CpuBackend()])


def red_image(tensor):
    tensor[...] = 0
    tensor[..., 0] = 255  # RGB: red channel full


def test_tpu_present_runs_the_edgetpu_model():
    tpu = FakeTpu()
    eng = engine(tpu)
    assert eng.backend == "edgetpu" and eng.model_path == TPU_MODEL
    assert tpu.loaded == [(delegate_library(), {})]  # auto: no device option
    _, outputs, _ = eng.run(red_image)
    assert int(np.argmax(outputs[0])) == 0


@pytest.mark.parametrize("device", ["usb", "usb:0", "pci:1"])
def test_device_spec_is_passed_to_the_delegate(device):
    tpu = FakeTpu({"devices": ["usb", "pci", "pci"]})
    engine(tpu, device)
    assert tpu.loaded == [(delegate_library(), {"device": device})]


def test_missing_device_index_falls_back_with_reason():
    eng = engine(FakeTpu({"devices": ["usb"]}), "usb:3")
    assert eng.backend == "cpu"
    assert "no Edge TPU matching 'usb:3'" in dict(eng.attempts)["edgetpu"]


def test_no_tpu_falls_back_to_cpu_twin():
    eng = engine(FakeTpu({"devices": []}))
    assert eng.backend == "cpu" and eng.model_path == CPU_MODEL


def test_delegate_load_failure_falls_back():
    eng = engine(FakeTpu({"fail_load": True}))
    assert eng.backend == "cpu"
    assert "Failed to load delegate" in dict(eng.attempts)["edgetpu"]


def test_invoke_failure_mid_run_falls_back_within_the_same_frame():
    tpu = FakeTpu()
    eng = engine(tpu)
    _, before, _ = eng.run(red_image)
    tpu.set(invoke="raise")
    _, after, _ = eng.run(red_image)  # no exception: retried on the CPU
    assert eng.backend == "cpu"
    np.testing.assert_array_equal(before[0], after[0])
    assert "USB transfer error" in eng.attempts[-1].reason


def test_tpu_vanishes_mid_run_falls_back_to_cpu():
    # Coming back to the TPU is the supervisor's re-probe: see test_supervisor.py.
    tpu = FakeTpu()
    eng = engine(tpu)
    tpu.set(devices=[])
    _, outputs, _ = eng.run(red_image)
    assert eng.backend == "cpu"
    assert int(np.argmax(outputs[0])) == 0


def test_cpu_device_never_touches_the_tpu():
    tpu = FakeTpu()
    eng = engine(tpu, "cpu")
    assert eng.backend == "cpu" and tpu.loaded == []


def test_cpu_model_with_edgetpu_twin_beside_it_uses_the_tpu():
    eng = engine(FakeTpu(), model=CPU_MODEL)
    assert eng.backend == "edgetpu" and eng.model_path == TPU_MODEL


def test_edgetpu_only_model_without_twin_says_so():
    with pytest.raises(ModelError, match="compiled for the Edge TPU only.*no CPU twin"):
        engine(FakeTpu({"devices": []}), model=str(fixture_model("orphan_edgetpu.tflite")))


def test_explicit_usb_request_without_fallback_candidates_is_unavailable():
    request = ModelRequest(TPU_MODEL, None, "usb", 1)
    with pytest.raises(BackendUnavailable, match="no Edge TPU"):
        Engine.open(request, [EdgeTpuBackend(FakeTpu({"devices": []}))])


@pytest.mark.parametrize(
    "spec, parsed",
    [
        ("auto", ("auto", None)),
        ("cpu", ("cpu", None)),
        ("usb", ("usb", None)),
        ("usb:2", ("usb", 2)),
        ("pci:0", ("pci", 0)),
    ],
)
def test_parse_device_spec(spec, parsed):
    assert parse_device_spec(spec) == parsed


@pytest.mark.parametrize(
    "spec", ["gpu", "usb:x", "cpu:1", "auto:0", "", "usb:", "pci:", "usb:\u0663"]
)
def test_parse_device_spec_rejects(spec):
    with pytest.raises(ValueError):
        parse_device_spec(spec)


def test_platform_library_names():
    assert delegate_library("Linux") == "libedgetpu.so.1"
    assert delegate_library("Darwin") == "libedgetpu.1.dylib"
    assert delegate_library("Windows") == "edgetpu.dll"


def test_ssd_postprocess_models_run_single_threaded(caplog):
    # TFLite_Detection_PostProcess drops the last class with 2 threads (tensorflow#56058):
    # on the demo clip's first frame 2 threads lose "blue"; we must still see all three.
    import cv2

    from edge_agent.inference.model import LoadedModel, ModelOptions
    from tests.support.paths import REPO

    demo = REPO / "models" / "demo"
    cap = cv2.VideoCapture(str(demo / "clip.avi"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    model = LoadedModel.load(
        ModelOptions(
            path=str(demo / "color_blobs.tflite"),
            labels=str(demo / "labels.txt"),
            device="cpu",
            num_threads=2,
        )
    )
    labels = sorted(r.label for r in model.infer(frame).results)
    assert labels == ["blue", "green", "red"]
    assert "running on 1 thread instead of 2" in caplog.text


def test_the_registry_finds_the_fake_tpu_plugin_on_the_path(fake_tpu_state):
    request = ModelRequest(TPU_MODEL, None, "auto", 1)
    eng = Engine.open(request)  # no injected backends: built-ins and entry points
    assert (eng.backend, eng.model_path) == ("edgetpu", TPU_MODEL)
    write_state(fake_tpu_state, devices=[])  # steered through its state file
    eng = Engine.open(request)
    assert eng.backend == "cpu"
    assert dict(eng.attempts)["edgetpu"] == "no Edge TPU matching 'auto' found (0 visible: none)"


def test_without_the_plugin_the_builtin_edgetpu_backend_is_used():
    assert Engine.open(ModelRequest(CPU_MODEL, None, "auto", 1)).backend == "cpu"
    assert type(candidate_backends("auto")[0]) is EdgeTpuBackend
