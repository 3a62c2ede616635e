"""The fleet simulator's own parts: identities, rig choice, agent config, the in-process
worker on the real demo model, the stub camera, outcome parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import WorkerError
from edge_agent.inference.engine import Engine
from edge_agent.inference.protocol import Done, InvokeFailed
from edge_agent.inference.slots import Buffers
from edge_agent.tools.fleet.agent import StubCamera
from edge_agent.tools.fleet.fleet import FleetSettings
from edge_agent.tools.fleet.inline_worker import RIGGED_MESSAGE, InlineWorker
from edge_agent.tools.fleet.observer import _outcome
from tests.support.paths import REPO

DEMO = REPO / "models" / "demo"


def settings(tmp_path: Path, **kw) -> FleetSettings:
    return FleetSettings(
        size=kw.pop("size", 200),
        root=tmp_path,
        model=DEMO / "color_blobs.tflite",
        trusted_keys=(str(tmp_path / "k.pub"),),
        **kw,
    )


def test_device_ids_are_unique_and_rig_is_deterministic_by_seed(tmp_path):
    s = settings(tmp_path, rigged_fraction=0.1, seed=3)
    ids = s.device_ids()
    assert len(set(ids)) == 200 and ids[0] == "sim-000" and ids[-1] == "sim-199"
    assert len(s.rigged_ids()) == 20
    assert s.rigged_ids() == settings(tmp_path, rigged_fraction=0.1, seed=3).rigged_ids()
    assert s.rigged_ids() != settings(tmp_path, rigged_fraction=0.1, seed=4).rigged_ids()
    assert settings(tmp_path).rigged_ids() == frozenset()


def test_each_agent_config_parses_with_its_own_identity_and_state_dir(tmp_path):
    specs = settings(tmp_path, size=3, groups=("a", "b"), rigged_fraction=0.34).specs()
    configs = [spec.config() for spec in specs]
    assert [c.device.id for c in configs] == ["sim-000", "sim-001", "sim-002"]
    assert len({c.device.state_dir for c in configs}) == 3
    assert all(c.device.groups == ("a", "b") for c in configs)
    assert all(c.updates.enabled and c.updates.allow_http for c in configs)
    assert sum(spec.rigged for spec in specs) == 1


def _started(fail: bool) -> tuple[InlineWorker, Buffers]:
    from edge_agent.inference.model import ModelOptions

    request = ModelOptions(path=str(DEMO / "color_blobs.tflite"), num_threads=1).request()
    worker = InlineWorker(request, fail_invokes=fail)
    info = worker.start(10.0)
    buffers = Buffers(info.input, info.outputs)
    worker.attach(buffers)
    return worker, buffers


@pytest.mark.parametrize("fail", [False, True])
def test_inline_worker_runs_the_real_model_or_fails_every_frame_when_rigged(fail):
    worker, buffers = _started(fail)
    try:
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 255, buffers.inputs[0].shape).astype(buffers.inputs[0].dtype)
        buffers.inputs[0][...] = frame
        worker.submit(7, 0)
        msg = worker.receive(1.0)
        if fail:
            assert msg == InvokeFailed(7, 0, RIGGED_MESSAGE)
        else:
            assert isinstance(msg, Done) and msg.seq == 7
            engine = Engine.open(worker.request, warmup=False)
            _, expected, _ = engine.run(lambda tensor: np.copyto(tensor, frame))
            for got, want in zip(buffers.outputs[0], expected):
                np.testing.assert_array_equal(got, want)  # the model's own outputs
        assert worker.receive(0.0) is None
    finally:
        worker.stop()
        buffers.close()
    assert not worker.alive()
    with pytest.raises(WorkerError):
        worker.submit(8, 0)


def test_stub_camera_delivers_paced_frames_and_none_when_not_due():
    cam = StubCamera(fps=0.5)
    first = cam.get(0.0)
    assert first is not None and first.frame_id == 1 and first.camera == cam.name
    assert cam.get(0.01) is None  # the next frame is due in 2 s
    cam.stop()
    assert cam.get(5.0) is None


def test_outcome_reads_a_model_state_document():
    doc = {"state": "rolled_back", "reason": "health_check_failed", "version": 2,
           "name": "m", "request_id": "r1", "message": None}  # fmt: skip
    o = _outcome(doc)
    assert (o.state, o.reason, o.version, o.request_id) == (
        "rolled_back", "health_check_failed", "2", "r1",
    )  # fmt: skip
    assert o.terminal and not o.active
    assert not _outcome({"state": "downloading"}).terminal
