"""The bench's simulated Edge TPU (P9) and per-thread CPU split, on a fixture model.

Nothing here is timed: the tests check outputs, selection and field sanity only.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time

import numpy as np
import pytest

from edge_agent.inference.backends.base import BUILTINS, ModelRequest, registered
from edge_agent.inference.backends.cpu import CpuBackend
from edge_agent.tools.bench import procfs, simtpu
from edge_agent.tools.bench.simtpu import SimulatedTpuBackend
from tests.support.paths import fixture_model

PR_SET_TIMERSLACK, PR_GET_TIMERSLACK = 29, 30  # <linux/prctl.h>

MODEL = str(fixture_model("color_uint8.tflite"))


@pytest.fixture(autouse=True)
def _own_timer_slack():
    """An invoke on this thread lowers its timer slack, which every thread and process
    started later inherits: put it back, and forget that this thread set it."""
    libc = ctypes.CDLL(None, use_errno=True)
    linux = sys.platform.startswith("linux")
    before = libc.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) if linux else None
    yield
    if linux:
        libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(before), 0, 0, 0)
    simtpu._slack.__dict__.clear()


def request(device="usb"):
    return ModelRequest(MODEL, None, device, 1)


def test_outputs_are_those_the_real_model_gives_on_the_recorded_frame():
    real = CpuBackend().open(request("cpu"))
    frame = np.random.default_rng(1).integers(0, 255, real.input.shape, dtype=np.uint8)
    frame = frame.astype(real.input.dtype)
    real.set_input(frame)
    real.invoke()
    expected = real.output_arrays()
    sim = SimulatedTpuBackend(invoke_ms=0.5, frame=frame).open(request())
    assert sim.backend == "simtpu" and sim.runtime == "simulated"
    assert [s.shape for s in sim.inputs] == [s.shape for s in real.inputs]
    sim.set_input(np.zeros_like(frame))
    assert sim.invoke() > 0
    for got, want in zip(sim.output_arrays(), expected):
        np.testing.assert_array_equal(got, want)


def test_auto_and_production_config_can_never_pick_it():
    names = {cls.name for cls in registered()}
    assert "simtpu" not in names and "simtpu" not in BUILTINS
    assert SimulatedTpuBackend not in registered()
    assert not SimulatedTpuBackend().serves("auto")


def test_bad_invoke_time_is_a_clear_error():
    from edge_agent.errors import EdgeAgentError

    with pytest.raises(EdgeAgentError, match="invoke time"):
        SimulatedTpuBackend(invoke_ms=0).open(request())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timer slack is Linux's")
def test_the_invoking_thread_and_no_other_gets_a_tight_timer_slack():
    libc = ctypes.CDLL(None, use_errno=True)

    def slack():
        return libc.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)

    seen = {}
    sim = SimulatedTpuBackend(invoke_ms=0.1).open(request())

    def invoking():
        seen["before"] = slack()
        sim.invoke()
        seen["after"] = slack()

    libc.prctl(PR_SET_TIMERSLACK, 0, 0, 0, 0)  # back to the default, whoever invoked here
    ours = slack()
    t = threading.Thread(target=invoking)
    t.start()
    t.join(10)
    assert seen["before"] == ours and seen["before"] != 1000
    assert seen["after"] == 1000
    assert slack() == ours  # the thread that did not invoke keeps the system's


def test_per_thread_split_names_threads_and_sums_to_total():
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    t = threading.Thread(target=spin, name="bench-spin", daemon=True)
    t.start()
    names = {t.native_id: "bench-spin"}
    before = procfs.thread_cpu_seconds(names=names)
    # Waits on the observable CPU counter, not a fixed time; relative to `before`, since
    # on a loaded box the spinner may have run 50 ms before `before` was read.
    spun = before.get("bench-spin", 0.0) + 0.05
    while procfs.thread_cpu_seconds(names=names).get("bench-spin", 0) < spun:
        time.sleep(0.01)
    after = procfs.thread_cpu_seconds(names=names)
    stop.set()
    t.join(5)
    split = procfs.split_ms_per_frame(before, after, 10)
    assert split["bench-spin"] > 0
    assert split["total"] == pytest.approx(sum(v for k, v in split.items() if k != "total"))
    assert procfs.split_ms_per_frame(before, after, 0) == {}


def test_bench_with_the_simulated_tpu_runs_the_real_pipeline_and_reports_p9(tmp_path):
    # In a subprocess: the bench registers the stand-in for its own processes only.
    import json
    import subprocess

    from tests.support.paths import REPO

    model = fixture_model("color_uint8.tflite")
    argv = [sys.executable, "-m", "edge_agent", "bench", "--model", str(model),
            "--frames", "40", "--warmup", "2", "--rounds", "1", "--pace", "100",
            "--pace-frames", "10", "--cold-starts", "0", "--objects", "0",
            "--sim-tpu", "2.5", "--cameras", "2", "--json"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout)["benchmarks"][0]
    assert r["backend"] == "simtpu" and r["sim_tpu_ms"] == 2.5 and r["cameras"] == 2
    # A: the bare loop is the accelerator's pace (a sleep of 2.5 ms), never faster.
    assert 0 < r["bare"]["fps"] <= 1000 / 2.5
    # D: the worker process on the same stand-in, never faster than its sleep either.
    assert r["rounds"][0]["worker"]["backend"] == "simtpu"
    assert 0 < r["worker_loop"]["fps"] <= 1000 / 2.5
    p9 = r["targets"]["P9_sim_tpu_fps"]
    assert p9["value"] == r["pipeline"]["fps"] and p9["limit"] == pytest.approx(380.0)
    assert p9["met"] == (p9["value"] >= 380.0)
    # Two cameras, both read; every frame published once and delivered.
    split = r["thread_ms_per_frame"]
    assert split["camera-bench"] > 0 and split["camera-bench-2"] > 0
    p = r["pipeline"]
    assert p["published"] == p["frames"] == p["delivered"] and p["errors"] == 0
    # And this process, which installed nothing, still cannot select it.
    assert "simtpu" not in {cls.name for cls in registered()}
