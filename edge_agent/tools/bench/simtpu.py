"""P9: a benchmark stand-in for an Edge TPU, so the bench can ask "can the host keep
an accelerator busy?" on a machine that has none.

:class:`SimulatedTpuBackend` opens the real CPU model once, runs it on one frame and
records its outputs; every later ``invoke()`` sleeps a fixed time (default 2.5 ms,
MobileNet v2 on USB3 as published) and hands back those recorded outputs. Sleeping uses
no CPU, so every CPU cycle the bench then measures is the host's own work.

Linux lets a sleeping thread wake up to its *timer slack* late (50 us by default), so a
2.5 ms sleep took 2.58 ms here: 3 % of P9's 5 % margin went to the stand-in itself,
where a real accelerator's completion wakes its waiter at once. The invoking thread
therefore asks for a 1 us slack (``PR_SET_TIMERSLACK``): its own, which threads and
processes it starts afterwards inherit (in the worker, the invoking thread starts none).

It is a bench tool and nothing else: it is not in the backend registry's BUILTINS nor
declared as an ``edge_agent.backends`` entry point of the package, so ``auto`` and any
production config can never pick it. ``edge-agent bench --sim-tpu MS`` registers
:class:`BenchSimTpu` for its own processes only (:func:`install_plugin`: a distribution
written to a temporary directory put on their path), so that the daemon's real pipeline
and inference worker run against it.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import ModelError
from edge_agent.inference.backends.base import ENTRY_POINT_GROUP, Backend, ModelRequest
from edge_agent.inference.backends.cpu import CpuBackend
from edge_agent.inference.runtime import Session

DEFAULT_INVOKE_MS = 2.5  # MobileNet v2 on a USB3 Edge TPU, as published
SSD_INVOKE_MS = 7.0  # SSD MobileNet v2, as published
PR_SET_TIMERSLACK = 29  # <linux/prctl.h>
SLACK_NS = 1000

_slack = threading.local()


def tight_timer_slack() -> bool:
    """Lower the calling thread's timer slack to 1 us, once per thread (Linux; elsewhere,
    or when refused, sleeps keep the system's slack). Returns whether it is set."""
    done = getattr(_slack, "set", None)
    if done is None:
        done = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                slack = ctypes.c_ulong(SLACK_NS)  # prctl is variadic: pass a full long
                done = libc.prctl(PR_SET_TIMERSLACK, slack, 0, 0, 0) == 0
            except (OSError, AttributeError):
                pass  # no libc prctl here: sleeps keep the system's slack
        _slack.set = done
    return done


class RecordedInterpreter:
    """An interpreter double: real tensor details, recorded outputs, a timed sleep."""

    def __init__(self, real: Any, invoke_ms: float):
        if not invoke_ms > 0:
            raise ModelError(f"simulated invoke time must be > 0 ms, got {invoke_ms}")
        self._inputs = real.get_input_details()
        self._outputs = real.get_output_details()
        self._input = np.zeros(self._inputs[0]["shape"], dtype=self._inputs[0]["dtype"])
        real.set_tensor(self._inputs[0]["index"], self._input)
        real.invoke()
        # Recorded once from the real model: the decoder sees genuine outputs.
        self._recorded = {d["index"]: real.get_tensor(d["index"]).copy() for d in self._outputs}
        self.invoke_s = invoke_ms / 1000.0
        self.invokes = 0

    def record(self, real: Any, frame: np.ndarray) -> None:
        """Re-record the outputs from the real interpreter on ``frame`` (model input)."""
        real.set_tensor(self._inputs[0]["index"], frame)
        real.invoke()
        self._recorded = {d["index"]: real.get_tensor(d["index"]).copy() for d in self._outputs}

    def get_input_details(self) -> list[dict[str, Any]]:
        """The real model's input details."""
        return self._inputs

    def get_output_details(self) -> list[dict[str, Any]]:
        """The real model's output details."""
        return self._outputs

    def tensor(self, index: int) -> Any:
        """A writable view of the input buffer, as TFLite's ``tensor()`` gives."""
        return lambda: self._input

    def set_tensor(self, index: int, array: np.ndarray) -> None:
        """Copy an input array in (shape and dtype checked as TFLite does)."""
        if array.shape != self._input.shape or array.dtype != self._input.dtype:
            raise ValueError(
                f"input is {array.dtype}{list(array.shape)}, "
                f"model wants {self._input.dtype}{list(self._input.shape)}"
            )
        self._input[...] = array

    def invoke(self) -> None:
        """Wait the accelerator's time without using CPU."""
        tight_timer_slack()
        time.sleep(self.invoke_s)
        self.invokes += 1

    def get_tensor(self, index: int) -> np.ndarray:
        """A copy of a recorded output."""
        return self._recorded[index].copy()


class SimulatedTpuBackend(Backend):
    """Bench-only backend: the real CPU model's recorded outputs after a timed sleep."""

    name = "simtpu"
    priority = 1000  # worse than every real backend, and never registered anyway
    kinds = frozenset({"usb", "pci"})

    def __init__(self, invoke_ms: float = DEFAULT_INVOKE_MS, frame: np.ndarray | None = None):
        self.invoke_ms = invoke_ms
        self.frame = frame

    def open(self, request: ModelRequest) -> Session:
        """Load the real CPU model once, record its outputs, and return the stand-in."""
        real_session = CpuBackend().open(request._replace(num_threads=1))
        real = real_session._interpreter
        fake = RecordedInterpreter(real, self.invoke_ms)
        if self.frame is not None:
            fake.record(real, self.frame)
        return Session(
            fake, backend=self.name, model_path=real_session.model_path, runtime="simulated"
        )


SIM_MS_ENV = "EDGE_AGENT_BENCH_SIM_TPU_MS"


class BenchSimTpu(SimulatedTpuBackend):
    """The stand-in as the bench registers it: first in line for ``usb``/``pci`` devices
    (ahead of the CPU fallback), its invoke time from ``$EDGE_AGENT_BENCH_SIM_TPU_MS``."""

    priority = 1

    def __init__(self) -> None:
        super().__init__(float(os.environ.get(SIM_MS_ENV, DEFAULT_INVOKE_MS)))


def install_plugin(workdir: Path, invoke_ms: float) -> None:
    """Register :class:`BenchSimTpu` for this process and every process it starts from now
    on (multiprocessing passes ``sys.path`` on; subprocesses get ``PYTHONPATH``).

    Call it before anything starts the multiprocessing forkserver.
    """
    dist = workdir / "edge_agent_bench_simtpu-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: edge-agent-bench-simtpu\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nsimtpu = edge_agent.tools.bench.simtpu:BenchSimTpu\n"
    )
    os.environ[SIM_MS_ENV] = repr(float(invoke_ms))
    sys.path.insert(0, str(workdir))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(workdir), os.environ.get("PYTHONPATH", "")) if p
    )


def p9_target(pipeline_fps: float | None, invoke_ms: float) -> dict[str, Any]:
    """P9: the pipeline keeps the simulated accelerator busy: fps >= 0.95 x 1000 / ms."""
    limit = 0.95 * 1000.0 / invoke_ms
    met = None if pipeline_fps is None else pipeline_fps >= limit
    return {"value": pipeline_fps, "limit": limit, "met": met, "applies": True}
