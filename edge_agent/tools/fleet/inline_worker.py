"""An inference worker that runs the model in the simulated agent's own process.

A real box runs its interpreter in a child process (:class:`~edge_agent.inference.worker.
WorkerHandle`); 200 simulated boxes would be 200-400 processes. The simulator hands the
real :class:`~edge_agent.inference.supervisor.Supervisor` this double instead: same
interface, the same :class:`~edge_agent.inference.engine.Engine` loading the same model
files on the same backends, the invoke done synchronously on ``submit``. Everything
above it (codec, switchboard, the update service's validation, swap and health check)
is the daemon's own code.

``fail_invokes`` rigs the agent: every frame invoke fails (as a model that breaks on the
scene this box's camera shows), so the update health check rolls the release back.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_agent.errors import EdgeAgentError, WorkerError
from edge_agent.inference.backends.base import ModelRequest, registered
from edge_agent.inference.engine import Engine
from edge_agent.inference.protocol import Completed, Done, InvokeFailed, WorkerInfo
from edge_agent.inference.slots import Buffers

RIGGED_MESSAGE = "rigged by the fleet simulator: this box fails every frame on this model"
_PIDS = itertools.count(1)  # fake worker ids: unique within the simulator process


class InlineWorker:
    """The :class:`WorkerHandle` interface over an in-process :class:`Engine`.

    Args:
        request: what to load.
        skip: backend names not to try.
        warmup: warm-up invoke after load.
        context: ignored (no process is started).
        fail_invokes: every frame invoke reports :class:`InvokeFailed` (the rig).
    """

    def __init__(
        self,
        request: ModelRequest,
        *,
        skip: Sequence[str] = (),
        warmup: bool = True,
        context: Any = None,
        fail_invokes: bool = False,
    ):
        self.request = request
        self.skip = tuple(skip)
        self.info: WorkerInfo | None = None
        self._warmup = warmup
        self._fail = fail_invokes
        self._engine: Engine | None = None
        self._buffers: Buffers | None = None
        self._done: collections.deque[Completed] = collections.deque()
        self._ready = threading.Condition()
        self._alive = False
        self._pid = os.getpid() * 1000 + next(_PIDS)

    @property
    def pid(self) -> int:
        """A per-worker id (these workers share the simulator's process)."""
        return self._pid

    def start(self, timeout: float, cancel: threading.Event | None = None) -> WorkerInfo:
        """Load the model on the best backend that works (``timeout`` and ``cancel``
        unused: in-process).

        Raises:
            WorkerError: no backend can load it (the engine's reasons in the message).
        """
        started = time.perf_counter()
        ranked = registered()
        backends = [cls() for cls in ranked if cls.name not in self.skip]
        try:
            engine = Engine.open(self.request, backends, warmup=self._warmup)
        except EdgeAgentError as exc:
            raise WorkerError(str(exc)) from exc
        self._engine, self._alive = engine, True
        self.info = engine.worker_info(self._pid, [cls.name for cls in ranked], started)
        return self.info

    def attach(self, buffers: Buffers) -> None:
        """Use these slots from now on."""
        self._buffers = buffers

    def submit(self, seq: int, slot: int) -> None:
        """Invoke on an input slot now; the completion waits for :meth:`receive`.

        Raises:
            WorkerError: the worker was stopped.
        """
        if not self._alive or self._engine is None or self._buffers is None:
            raise WorkerError(self.death())
        session = self._engine.session
        if self._fail:
            msg: Completed = InvokeFailed(seq, slot, RIGGED_MESSAGE)
        else:
            np.copyto(session.input_tensor(), self._buffers.inputs[slot])
            try:
                ms = session.invoke()
            except EdgeAgentError as exc:
                msg = InvokeFailed(seq, slot, str(exc))
            else:
                for i, view in enumerate(self._buffers.outputs[slot]):
                    np.copyto(view, session.output(i))
                msg = Done(seq, slot, ms)
        with self._ready:
            self._done.append(msg)
            self._ready.notify_all()

    def receive(self, timeout: float) -> Completed | None:
        """The next completion, or None after ``timeout`` seconds.

        Raises:
            WorkerError: the worker was stopped.
        """
        with self._ready:
            if not self._done and self._alive:
                self._ready.wait(timeout)
            if self._done:
                return self._done.popleft()
        if not self._alive:
            raise WorkerError(self.death())
        return None

    def death(self) -> str:
        """How the worker ended."""
        return f"inline worker {self._pid} stopped"

    def alive(self) -> bool:
        """True until stopped."""
        return self._alive

    def stop(self, timeout: float = 2.0) -> None:
        """Drop the interpreter (``timeout`` unused: nothing to join)."""
        with self._ready:
            self._alive = False
            self._engine = None
            self._buffers = None
            self._ready.notify_all()

    def kill(self) -> None:
        """Same as :meth:`stop`."""
        self.stop()
