"""The inference worker: a child process that owns the interpreter.

libedgetpu aborts the whole process at C level on USB transfer errors, which Python
cannot catch; so the interpreter lives in a child process that the supervisor can lose
and replace. Frames travel through shared memory (the pipeline preprocesses straight
into an input slot; the worker copies it into the tensor and copies the outputs back
into an output slot); the pipe only carries tiny control messages.

The messages on the pipe are the NamedTuples of :mod:`edge_agent.inference.protocol`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from edge_agent.errors import EdgeAgentError, InferenceError, WorkerError
from edge_agent.inference.backends.base import ModelRequest, registered
from edge_agent.inference.engine import Engine
from edge_agent.inference.protocol import (
    AttachBuffers,
    Cancel,
    Completed,
    Done,
    FrameReader,
    InvokeFailed,
    LoadFailed,
    Ready,
    Run,
    Stop,
    Trying,
    WorkerInfo,
    encode,
)
from edge_agent.inference.runtime import checked_outputs, invoke
from edge_agent.inference.slots import Buffers, views
from edge_agent.scheduling import worker_priority

logger = logging.getLogger(__name__)

# Blamed, and skipped by the next worker, when discovering the backends kills the worker (a
# plugin whose import crashes the process): the model then loads on the built-ins.
PLUGINS = "backend plugins"


def forkserver_context() -> Any:
    """A forkserver context with the heavy imports preloaded: restarts take milliseconds."""
    ctx = mp.get_context("forkserver")
    # The prelude first: SIGINT ignored from each child's birth (see its docstring).
    preload = ["edge_agent.inference.forkserver_prelude", "edge_agent.inference.worker"]
    ctx.set_forkserver_preload([*preload, "ai_edge_litert.interpreter"])
    return ctx


def _attach(name: str) -> SharedMemory:
    """Attach to a block the parent owns.

    Spawn and forkserver children share the parent's resource tracker, where the block
    is already registered (a set), so attaching must not unregister it: the parent
    unlinks it, and the tracker cleans up if every process dies.
    """
    return SharedMemory(name=name)


def worker_main(
    conn: Connection,
    request: ModelRequest,
    skip: tuple[str, ...],
    warmup: bool,
    log_level: int,
    env: dict[str, str],
) -> None:
    """Entry point of the child process."""
    # A forkserver child has the server's environment, not the parent's current one.
    os.environ.update(env)
    # Ctrl-C reaches the whole process group; the supervisor decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_priority()  # the frame path's threads give way to this one
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s worker: %(message)s")
    start = time.perf_counter()
    conn.send(Trying(PLUGINS))  # importing a plugin may kill this process: blame them
    ranked = registered(plugins=PLUGINS not in skip)
    backends = [cls() for cls in ranked if cls.name not in skip]
    try:
        engine = Engine.open(
            request, backends, warmup=warmup, on_attempt=lambda name: conn.send(Trying(name))
        )
    except EdgeAgentError as exc:
        conn.send(LoadFailed(str(exc)))
        return
    session = engine.session
    conn.send(Ready(engine.worker_info(os.getpid(), [cls.name for cls in ranked], start)))
    blocks: list[SharedMemory] = []
    inputs: list[np.ndarray] = []
    outputs: list[list[np.ndarray]] = []
    reader = FrameReader(conn)  # from here on the only reader of the pipe
    while True:
        try:
            msg = reader.recv()
        except (EOFError, OSError):
            break  # the parent went away
        if isinstance(msg, Run):
            np.copyto(session.input_tensor(), inputs[msg.slot])
            try:
                ms = invoke(session)
                arrays = checked_outputs(session)
            except InferenceError as exc:
                conn.send(InvokeFailed(msg.seq, msg.slot, str(exc)))
                continue
            for view, array in zip(outputs[msg.slot], arrays):
                np.copyto(view, array)
            conn.send_bytes(encode(Done(msg.seq, msg.slot, ms)))
        elif isinstance(msg, AttachBuffers):
            blocks = [_attach(n) for n in (*msg.inputs, *msg.outputs)]
            inputs = [views(b, [session.input])[0] for b in blocks[: len(msg.inputs)]]
            outputs = [views(b, session.outputs) for b in blocks[len(msg.inputs) :]]
        elif isinstance(msg, Stop):
            break
    del inputs, outputs
    for block in blocks:
        block.close()


class WorkerHandle:
    """The parent's side of one worker process.

    Args:
        request: what to load.
        skip: backend names not to try (they failed recently).
        warmup: warm-up invoke after load.
        context: multiprocessing context (forkserver: fast restarts, no inherited threads).
    """

    def __init__(
        self,
        request: ModelRequest,
        *,
        skip: Sequence[str] = (),
        warmup: bool = True,
        context: Any = None,
    ):
        self.request = request
        self.skip = tuple(skip)
        ctx = context or mp.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=True)
        self._process = ctx.Process(
            target=worker_main,
            args=(
                child,
                request,
                self.skip,
                warmup,
                logging.getLogger().getEffectiveLevel(),
                # Test/driver hooks only: the worker parses model files and has no use
                # for the broker credentials.
                {
                    k: v
                    for k, v in os.environ.items()
                    if k.startswith("EDGE_AGENT_") and not k.startswith("EDGE_AGENT_MQTT_")
                },
            ),
            name="edge-agent-worker",
            daemon=True,
        )
        self._child = child
        self._reader: FrameReader | None = None  # once the worker is ready
        self.info: WorkerInfo | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid."""
        return self._process.pid

    def start(self, timeout: float, cancel: Cancel | None = None) -> WorkerInfo:
        """Start the process and wait until the model is loaded.

        Args:
            timeout: seconds the load may take (per backend tried).
            cancel: once set, the load is given up (the worker killed) within 0.1 s.

        Raises:
            WorkerError: it failed to load (the reason is the engine's), died, timed out,
                or was cancelled (that one names no backend: none is to blame).
        """
        self._process.start()
        self._child.close()
        if not self._poll(timeout, cancel):
            self.kill()
            raise WorkerError(
                f"model {self.request.model_path}: worker did not load within {timeout:.0f}s"
            )
        deadline = time.monotonic() + timeout
        trying: str | None = None
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError) as exc:
                self.kill()
                on = f" on {trying}" if trying else ""
                raise WorkerError(
                    f"model {self.request.model_path}: worker died while loading{on} "
                    f"(exit code {self._process.exitcode})",
                    backend=trying,
                ) from exc
            if not isinstance(msg, Trying):
                break
            trying = msg.backend
            if not self._poll(max(0.0, deadline - time.monotonic()), cancel):
                self.kill()
                raise WorkerError(
                    f"model {self.request.model_path}: worker did not load on {trying} "
                    f"within {timeout:.0f}s",
                    backend=trying,
                )
        if not isinstance(msg, Ready):
            self.kill()
            raise WorkerError(msg.reason if isinstance(msg, LoadFailed) else repr(msg))
        self.info = msg.info
        self._reader = FrameReader(self._conn)
        return self.info

    def _poll(self, timeout: float, cancel: Cancel | None) -> bool:
        """Wait up to ``timeout`` for a message from the loading worker (see :meth:`start`)."""
        if cancel is None:
            return self._conn.poll(timeout)
        end = time.monotonic() + timeout
        while not cancel.is_set():
            left = end - time.monotonic()
            if self._conn.poll(max(0.0, min(left, 0.1))):
                return True
            if left <= 0:
                return False
        self.kill()
        raise WorkerError(f"model {self.request.model_path}: load cancelled (stopping)")

    def attach(self, buffers: Buffers) -> None:
        """Hand the shared slots to the worker (a dead one fails at its first submit)."""
        try:
            self._conn.send(buffers.names())
        except (OSError, ValueError):
            pass  # submit() then reports how the worker died, and it is replaced

    def submit(self, seq: int, slot: int) -> None:
        """Ask for one invoke on an input slot.

        Raises:
            WorkerError: the pipe is broken (the worker died).
        """
        try:
            self._conn.send_bytes(encode(Run(seq, slot)))
        except (OSError, ValueError) as exc:
            # The pipe broke because the worker died: report how (signal, exit code),
            # which is what the operator needs, not the EPIPE.
            raise WorkerError(self.death()) from exc

    def receive(self, timeout: float) -> Completed | None:
        """The next completion message, or None after ``timeout`` seconds.

        Raises:
            WorkerError: the worker died (exit code in the message).
        """
        reader = self._reader
        if reader is None:
            raise WorkerError(f"model {self.request.model_path}: the worker never became ready")
        try:
            if not reader.poll(timeout):
                if not self._process.is_alive():
                    raise WorkerError(self.death())
                return None
            return reader.recv()
        except (EOFError, OSError) as exc:
            raise WorkerError(self.death()) from exc

    def death(self) -> str:
        """Describe how the worker ended (waits briefly for the exit code)."""
        self._process.join(0.5)
        code = self._process.exitcode
        if code is not None and code < 0:
            import signal

            try:
                return f"worker {self.pid} killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"worker {self.pid} killed by signal {-code}"
        return f"worker {self.pid} exited with code {code}"

    def alive(self) -> bool:
        """True while the process runs."""
        return self._process.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``timeout``."""
        try:
            self._conn.send(Stop())
        except (OSError, ValueError):
            pass
        self._process.join(timeout)
        if self._process.is_alive():
            self.kill()
        self._conn.close()

    def kill(self) -> None:
        """SIGKILL the worker (hung or being replaced) and reap it."""
        if self._process.pid is not None and self._process.is_alive():
            self._process.kill()
        self._process.join(2.0)


def run_once(worker: WorkerHandle, array: np.ndarray, timeout: float) -> list[np.ndarray]:
    """Invoke a started worker once on a raw input tensor (a golden input) and copy the outputs.

    Raises:
        WorkerError: the worker died, hung, or the invoke failed.
    """
    info = worker.info
    buffers = Buffers(info.input, info.outputs)
    try:
        worker.attach(buffers)
        np.copyto(buffers.inputs[0], array.reshape(info.input.shape).astype(info.input.dtype))
        worker.submit(1, 0)
        msg = worker.receive(timeout)
        if msg is None:
            raise WorkerError(f"model {info.model_path}: no result in {timeout:.0f}s")
        if isinstance(msg, InvokeFailed):
            raise WorkerError(f"model {info.model_path}: {msg.message}")
        return [np.array(view) for view in buffers.outputs[0]]
    finally:
        buffers.close()
