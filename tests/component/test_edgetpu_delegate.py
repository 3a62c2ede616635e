"""Tier 2: the real ``load_delegate`` path, with a delegate library built here with ``cc``.

No Edge TPU and no libedgetpu exist here. tests/support/delegate/ holds a TFLite
external delegate (``tflite_plugin_create_delegate``) that loads, fails, aborts or
hangs on request; ``model.edgetpu_library`` points at it, and the runtimes load it the
way they load libedgetpu. Its Prepare claims no node, so the CPU kernels compute the
results. Where a test needs "an Edge TPU present", the fake TPU lists the device and
passes the delegate through (``delegate="real"``).
"""

from __future__ import annotations

import gc

import pytest

from edge_agent.inference.backends.base import ModelRequest
from edge_agent.inference.backends.cpu import CpuBackend
from edge_agent.inference.backends.edgetpu import EdgeTpuBackend, LibEdgeTpuDriver
from edge_agent.inference.engine import Engine
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.runtime import (
    CPU_PREFERENCE,
    DELEGATE_PREFERENCE,
    first_runtime,
    make_session,
    runtime_module,
)
from edge_agent.tools.doctor.host import FAIL, OK, HostChecks
from edge_agent.tools.doctor.probes import probe_model
from edge_agent.tools.doctor.report import Report
from tests.support.broker import wait_until
from tests.support.delegate_lib import LOG_ENV, MODES, build_delegate, delegate_log
from tests.support.fake_tpu import FakeTpu, write_state
from tests.support.paths import REPO, fixture_model
from tests.support.tpu_plugin import fake_tpu_env

pytestmark = pytest.mark.timeout(120)

TPU_MODEL = str(fixture_model("color_uint8_edgetpu.tflite"))
CPU_MODEL = str(fixture_model("color_uint8.tflite"))
LABELS = str(fixture_model("color_labels.txt"))


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    """The delegate built once per mode (its default when no "mode" option is given)."""
    directory = tmp_path_factory.mktemp("delegates")
    return {mode: str(build_delegate(directory, mode)) for mode in MODES}


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """The delegate's call log (child processes inherit the variable)."""
    path = tmp_path / "delegate.log"
    monkeypatch.setenv(LOG_ENV, str(path))
    return path


def red(tensor):
    tensor[...] = 0
    tensor[..., 0] = 255  # RGB: the red channel full


@pytest.mark.parametrize("runtime", CPU_PREFERENCE)
def test_each_runtime_loads_applies_and_destroys_the_delegate(runtime, libraries, calls):
    module = runtime_module(runtime)
    if module is None:
        pytest.skip(f"{runtime} is not installed")
    delegate = module.load_delegate(libraries["ok"], {"device": "usb:0"})
    session = make_session(
        module, runtime, CPU_MODEL, backend="edgetpu", num_threads=1, delegates=[delegate]
    )
    red(session.input_tensor())
    session.invoke()
    assert session.output(0).tolist() == [[255, 0, 0]]  # the CPU kernels ran the model
    assert delegate_log(calls) == ["create mode=ok device=usb:0", "prepare"]
    del session, delegate
    gc.collect()
    assert delegate_log(calls)[-1] == "destroy"

    with pytest.raises(ValueError, match=r"refused to load \(device=pci\)"):
        module.load_delegate(libraries["ok"], {"mode": "fail", "device": "pci"})


def engine(library, device="usb", model=TPU_MODEL):
    """Fake devices, the real delegate loading, the CPU as the fallback."""
    request = ModelRequest(model, None, device, 1, edgetpu_library=library)
    tpu = EdgeTpuBackend(FakeTpu({"delegate": "real"}))
    return Engine.open(request, [tpu, CpuBackend()])


def test_the_edgetpu_backend_runs_with_the_configured_library(libraries, calls):
    eng = engine(libraries["ok"], device="usb:0")
    assert (eng.backend, eng.model_path, eng.attempts) == ("edgetpu", TPU_MODEL, [])
    _, outputs, _ = eng.run(red)
    assert outputs[0].tolist() == [[255, 0, 0]]
    assert delegate_log(calls)[:2] == ["create mode=ok device=usb:0", "prepare"]


def test_a_delegate_that_fails_to_load_falls_back_to_the_cpu(libraries, calls):
    eng = engine(libraries["fail"])
    assert eng.backend == "cpu"
    reason = dict(eng.attempts)["edgetpu"]
    assert reason.startswith(
        f"cannot load the Edge TPU delegate {libraries['fail']} (model.edgetpu_library) "
    )
    assert "edge-agent test delegate refused to load (device=usb)" in reason
    assert delegate_log(calls) == ["create mode=fail device=usb"]


def test_a_missing_library_names_the_key(tmp_path, libraries):
    missing = str(tmp_path / "libedgetpu.so.1")
    eng = engine(missing)
    assert eng.backend == "cpu"
    assert dict(eng.attempts)["edgetpu"] == f"model.edgetpu_library = {missing!r}: no such file"


def test_the_real_libedgetpu_driver_uses_the_library_it_is_given(libraries, calls):
    driver = LibEdgeTpuDriver()
    session = driver.make_session(CPU_MODEL, driver.load_delegate(libraries["ok"], {}), 1)
    # tflite-runtime when installed (what libedgetpu is built against), else LiteRT.
    expected = first_runtime(DELEGATE_PREFERENCE)[0]
    assert (session.backend, session.runtime) == ("edgetpu", expected)
    assert delegate_log(calls) == ["create mode=ok", "prepare"]


def options(library):
    return ModelOptions(path=CPU_MODEL, labels=LABELS, num_threads=1, edgetpu_library=library)


def test_a_delegate_that_aborts_or_hangs_costs_the_child_process_only(
    libraries, calls, fake_tpu_state
):
    # The probe's child discovers the fake TPU plugin and loads the library for real.
    write_state(fake_tpu_state, delegate="real")
    ok = probe_model(options(libraries["ok"]), timeout=60)
    assert (ok["ok"], ok["backend"], ok["file"]) == (True, "edgetpu", TPU_MODEL)

    aborted = probe_model(options(libraries["abort"]), timeout=60)
    assert aborted == {
        "ok": False,
        "error": "loading crashed the process (SIGABRT)",
        **({"stderr": aborted["stderr"]} if "stderr" in aborted else {}),
    }
    hung = probe_model(options(libraries["hang"]), timeout=3)
    assert hung == {"ok": False, "error": "loading did not finish within 3s (hung)"}
    assert delegate_log(calls) == [
        "create mode=ok",
        "prepare",
        "destroy",
        "create mode=abort",
        "create mode=hang",
    ]


@pytest.mark.e2e
def test_the_daemon_worker_loads_the_configured_library(
    tmp_path, libraries, mqtt_broker, mqtt_subscriber, edge_daemon
):
    state, log = tmp_path / "tpu.json", tmp_path / "delegate.log"
    write_state(state, delegate="real")
    daemon = edge_daemon(
        mqtt_broker.port,
        REPO / "models" / "demo" / "clip.avi",
        fixture_model("color_uint8_edgetpu.tflite"),
        LABELS,
        env={**fake_tpu_env(state), LOG_ENV: str(log)},
        model={"edgetpu_library": libraries["ok"]},
        mqtt={"publish_every_frame": True},
    )
    first = mqtt_subscriber.wait_count(daemon.topics.results, 3, timeout=30)
    assert {m.json()["backend"] for m in first} == {"edgetpu"}
    wait_until(lambda: "prepare" in delegate_log(log), 5, "the worker applied the delegate")
    assert delegate_log(log)[0] == "create mode=ok"


def test_the_doctor_checks_the_configured_library(tmp_path, libraries):
    report = Report()
    host = HostChecks(report, str(tmp_path), str(tmp_path))
    host.coral("auto", libraries["ok"])
    missing = str(tmp_path / "nope" / "libedgetpu.so.1")
    host.coral("auto", missing)
    checks = [c for c in report.checks if c.name == "libedgetpu"]
    assert [(c.status, c.detail) for c in checks] == [
        (OK, f"{libraries['ok']} loads (model.edgetpu_library = {libraries['ok']!r})"),
        (FAIL, f"model.edgetpu_library = {missing!r}: no such file"),
    ]


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["abort", "hang"])
def test_a_delegate_that_kills_the_worker_while_loading_starts_the_daemon_on_the_cpu(
    tmp_path, mode, libraries, mqtt_broker, mqtt_subscriber, edge_daemon
):
    """libedgetpu aborting (or hanging) while the model loads must not leave the box without
    detection: the load is retried without that backend, and the daemon runs on the CPU."""
    state, log = tmp_path / "tpu.json", tmp_path / "delegate.log"
    write_state(state, delegate="real")
    daemon = edge_daemon(
        mqtt_broker.port,
        REPO / "models" / "demo" / "clip.avi",
        fixture_model("color_uint8_edgetpu.tflite"),
        LABELS,
        env={**fake_tpu_env(state), LOG_ENV: str(log)},
        model={"edgetpu_library": libraries[mode]},
        inference={"load_timeout": 5.0} if mode == "hang" else {},
        mqtt={"publish_every_frame": True},
    )
    first = mqtt_subscriber.wait_count(daemon.topics.results, 3, timeout=60)
    assert {m.json()["backend"] for m in first} == {"cpu"}
    assert {m.json()["model"]["file"] for m in first} == {CPU_MODEL}
    daemon.wait_log(r"loading on edgetpu failed", timeout=5)
    assert delegate_log(log)[0] == f"create mode={mode}"
    assert daemon.stop(timeout=15) == 0
