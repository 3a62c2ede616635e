"""Selecting the fake Edge TPU the way any accelerator is added: as a backend plugin.

``tests/support/plugins`` holds a test-only distribution (``*.dist-info`` with an
``edge_agent.backends`` entry point) that declares ``tests.support.fake_tpu`` 's
FakeEdgeTpuBackend as ``edgetpu``. A directory on ``sys.path`` is where
``importlib.metadata`` finds distributions, so putting that one on the path of a
process is all it takes; the fake's behaviour is steered through its state file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.fake_tpu import STATE_ENV, write_state
from tests.support.paths import REPO

PLUGIN_DIR = Path(__file__).resolve().parent / "plugins"


def _path_with_plugin() -> str:
    """PYTHONPATH holding the test plugin's distribution and the repo (its module)."""
    parts = [str(PLUGIN_DIR), str(REPO), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def fake_tpu_env(state: str | os.PathLike[str]) -> dict[str, str]:
    """Environment that makes a daemon subprocess (and its workers) use the fake TPU."""
    return {"PYTHONPATH": _path_with_plugin(), STATE_ENV: os.fspath(state)}


@pytest.fixture
def fake_tpu_state(tmp_path, monkeypatch):
    """The fake TPU as this process's ``edgetpu`` plugin; returns its state file.

    Workers started from here on find the plugin: multiprocessing hands a forkserver or
    spawn child this process's ``sys.path``, and other subprocesses get PYTHONPATH. They
    read the state file named by ``$EDGE_AGENT_FAKE_TPU_STATE``.
    """
    state = tmp_path / "tpu.json"
    write_state(state)
    monkeypatch.setenv("PYTHONPATH", _path_with_plugin())
    monkeypatch.setenv(STATE_ENV, str(state))
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    return state
