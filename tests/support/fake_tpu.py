"""A test double for the Edge TPU hardware: no Edge TPU exists on these machines.

It implements the EdgeTpuDriver protocol. "Running on the TPU" means running the CPU
twin of the ``_edgetpu`` model with a real interpreter, so results are real; what the
double controls is the hardware's behaviour: present or absent, the delegate failing to
load, and invoke raising, aborting the process (as libedgetpu does on USB errors; with
``abort_uniform`` only for a frame of one colour, a frame that kills the runtime) or
hanging. State lives in a JSON file named by ``$EDGE_AGENT_FAKE_TPU_STATE`` and is
re-read on every call, so a test can make the TPU vanish and come back while a daemon
subprocess runs. With ``delegate="real"`` only the devices are fake: the configured
``model.edgetpu_library`` is loaded through the runtime's real ``load_delegate`` and
applied to the CPU twin (tests/support/delegate_lib.py builds such a library).

Tests inject :class:`FakeTpu` into ``EdgeTpuBackend``, or select it the way any
accelerator is added: as the backend plugin ``edgetpu`` of the test-only distribution in
``tests/support/plugins`` (:class:`FakeEdgeTpuBackend`), which replaces the built-in.
tests/support/tpu_plugin.py puts it on the path of a daemon subprocess or of this
process. This module is imported by daemons and workers: it imports no test framework.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from edge_agent.inference.backends.cpu import resolve_cpu_model
from edge_agent.inference.backends.edgetpu import EdgeTpuBackend, LibEdgeTpuDriver
from edge_agent.inference.devices import TpuDevice
from edge_agent.inference.runtime import CPU_PREFERENCE, Session, first_runtime, make_session

STATE_ENV = "EDGE_AGENT_FAKE_TPU_STATE"
DEFAULT = {
    "devices": ["usb"],
    "fail_load": False,
    "invoke": "ok",
    "invoke_after": 0,
    "delegate": "fake",  # "real": load model.edgetpu_library with the runtime
}


def write_state(path: str | os.PathLike[str], **state: Any) -> None:
    """Atomically write the double's state (merged over the defaults)."""
    data = dict(DEFAULT, **state)
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class _Interpreter:
    """Proxies a real interpreter; invoke obeys the fault state."""

    def __init__(self, real: Any, tpu: FakeTpu):
        self._real = real
        self._tpu = tpu
        self.invokes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def invoke(self) -> None:
        state = self._tpu.state()
        self.invokes += 1
        mode = state["invoke"]
        if not state["devices"]:
            mode = "raise"  # the device vanished under a loaded delegate
        if mode == "abort_uniform":  # a frame that kills the runtime: one colour all over
            tensor = self._real.get_tensor(self._real.get_input_details()[0]["index"])
            mode = "abort" if tensor.min() == tensor.max() else "ok"
        if mode != "ok" and self.invokes > int(state.get("invoke_after", 0)):
            if mode == "abort":
                os.abort()  # what libedgetpu does on a USB transfer error
            if mode == "hang":
                time.sleep(3600)
            raise RuntimeError("Edge TPU invoke failed: USB transfer error (fake)")
        self._real.invoke()


class FakeTpu:
    """EdgeTpuDriver double. ``state`` (a dict) is used when no state file is set."""

    def __init__(self, state: dict[str, Any] | None = None):
        self._state = dict(DEFAULT, **(state or {}))
        self.loaded: list[tuple[str, dict[str, str]]] = []
        self.interpreters: list[_Interpreter] = []
        self._real = LibEdgeTpuDriver()

    def state(self) -> dict[str, Any]:
        path = os.environ.get(STATE_ENV)
        if path and os.path.exists(path):
            return dict(DEFAULT, **json.loads(Path(path).read_text()))
        return self._state

    def set(self, **changes: Any) -> None:
        self._state.update(changes)

    def list_devices(self) -> list[TpuDevice]:
        return [
            TpuDevice(kind, f"/fake/{kind}/{i}") for i, kind in enumerate(self.state()["devices"])
        ]

    def load_delegate(self, library: str, options: dict[str, str]) -> Any:
        state = self.state()
        if state["fail_load"] or not state["devices"]:
            raise ValueError(f"Failed to load delegate from {library}")
        self.loaded.append((library, dict(options)))
        if state["delegate"] == "real":
            return self._real.load_delegate(library, options)
        return object()

    def make_session(self, model_path: str, delegate: Any, num_threads: int) -> Session:
        twin = resolve_cpu_model(model_path, None)
        if self.state()["delegate"] == "real":
            # The real delegate applied to the CPU twin: its Prepare claims no node,
            # so the CPU kernels run the model.
            session = self._real.make_session(twin, delegate, num_threads)
            session.model_path = model_path
            return session
        runtime, module = first_runtime(CPU_PREFERENCE)
        tpu = self

        def factory(**kwargs: Any) -> _Interpreter:
            kwargs.pop("experimental_delegates", None)
            wrapped = _Interpreter(module.Interpreter(**kwargs), tpu)
            tpu.interpreters.append(wrapped)
            return wrapped

        session = make_session(
            module,
            runtime,
            twin,
            backend="edgetpu",
            num_threads=num_threads,
            interpreter_factory=factory,
        )
        session.model_path = model_path  # the file the TPU would run
        return session


class FakeEdgeTpuBackend(EdgeTpuBackend):
    """The ``edgetpu`` backend plugin of the test distribution: the fake hardware."""

    def __init__(self) -> None:
        super().__init__(FakeTpu())
