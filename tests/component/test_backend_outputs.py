"""Tier 2: a backend plugin whose outputs do not have the shapes it declared.

A plugin's session declares the model's tensors but hands back outputs of another shape
(a bug in the accelerator's glue). Broadcast or decoded as the model's, they would be
published as results ("nothing seen"); they are a failure of that backend instead, which
falls back to the next one, in process (``infer``) and in the daemon's worker.
"""

from __future__ import annotations

import textwrap

import pytest

from edge_agent.inference.backends.cpu import CpuBackend
from edge_agent.inference.codec import make_codec
from edge_agent.inference.model import LoadedModel, ModelOptions
from edge_agent.inference.supervisor import Supervisor
from tests.component.test_supervisor import RED, run_frames
from tests.support.paths import fixture_model

CPU_MODEL = str(fixture_model("color_uint8.tflite"))
LABELS = str(fixture_model("color_labels.txt"))

PLUGIN = '''
import numpy as np

from edge_agent.inference.backends.base import Backend
from edge_agent.inference.backends.cpu import CpuBackend


class Misshapen(Backend):
    """Runs the model on the CPU but returns every output as one zero: [1, 1]."""

    name = "misshapen"
    priority = 50
    kinds = frozenset({"auto"})

    def open(self, request):
        session = CpuBackend().open(request)
        session.backend = self.name
        session.output = lambda i: np.zeros((1, 1), session.outputs[i].dtype)
        return session


class Raising(Backend):
    """Its session's invoke raises what the accelerator's own library raises."""

    name = "raising"
    priority = 50
    kinds = frozenset({"auto"})

    def open(self, request):
        session = CpuBackend().open(request)
        session.backend = self.name

        def invoke():
            raise RuntimeError("accelerator link reset")

        session.invoke = invoke
        return session
'''


@pytest.fixture
def misshapen(tmp_path, monkeypatch):
    """The plugin as an installed distribution on this process's (and workers') path."""
    (tmp_path / "edge_agent_misshapen.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "edge_agent_misshapen-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: edge-agent-misshapen\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[edge_agent.backends]\nmisshapen = edge_agent_misshapen:Misshapen\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    import edge_agent_misshapen

    return edge_agent_misshapen.Misshapen


def test_in_process_the_misshapen_backend_fails_over_to_the_cpu(misshapen):
    options = ModelOptions(path=CPU_MODEL, labels=LABELS, num_threads=1)
    model = LoadedModel.load(options, [misshapen(), CpuBackend()])
    assert model.engine.backend == "misshapen"
    out = model.infer(RED)
    assert out.backend == "cpu" and out.results and out.results[0].label == "red"
    assert "misshapen" in model.engine.attempts[-1].backend
    assert "[1, 1]" in model.engine.attempts[-1].reason


def test_in_the_worker_the_misshapen_backend_fails_over_to_the_cpu(misshapen):
    options = ModelOptions(path=CPU_MODEL, labels=LABELS, num_threads=1)
    sup = Supervisor(options, make_codec, deadline=2.0, reprobe_initial=60, reprobe_max=60)
    sup.start()
    try:
        assert sup.current.worker.info.backend == "misshapen"
        done = run_frames(sup, 3)
        assert [d[0] for d in done] == [0, 1, 2]
        assert all(d[1] == "cpu" and d[2] and d[2][0].label == "red" for d in done), done
        assert "[1, 1]" in sup.last_error
    finally:
        sup.stop()


def test_in_process_a_foreign_exception_from_invoke_fails_over_to_the_cpu(misshapen):
    import edge_agent_misshapen

    options = ModelOptions(path=CPU_MODEL, labels=LABELS, num_threads=1)
    model = LoadedModel.load(options, [edge_agent_misshapen.Raising(), CpuBackend()])
    out = model.infer(RED)
    assert out.backend == "cpu" and out.results and out.results[0].label == "red"
    assert "RuntimeError: accelerator link reset" in model.engine.attempts[-1].reason


def test_a_plugin_that_kills_the_worker_at_import_costs_the_plugins_not_the_model(
    tmp_path, monkeypatch, caplog
):
    # A plugin whose import aborts the process (a native library crashing as it loads):
    # discovery runs in the worker, so the daemon survives, and the model must still run
    # on the built-in backends instead of no worker ever loading.
    (tmp_path / "edge_agent_aborting.py").write_text("import os\nos.abort()\n")
    info = tmp_path / "edge_agent_aborting-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: edge-agent-aborting\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[edge_agent.backends]\naborting = edge_agent_aborting:Aborting\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    options = ModelOptions(path=CPU_MODEL, labels=LABELS, num_threads=1)
    sup = Supervisor(options, make_codec, deadline=2.0, reprobe_initial=60, reprobe_max=60)
    sup.start()
    try:
        assert sup.current.worker.info.backend == "cpu"
        done = run_frames(sup, 2)
        assert [d[2][0].label for d in done] == ["red", "red"]
        assert "backend plugins" in caplog.text
    finally:
        sup.stop()
