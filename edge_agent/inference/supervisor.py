"""Supervises the inference worker: failover, TPU re-probing, and model hot swap.

The pipeline thread is the only caller of the frame-path methods (``slot``, ``submit``,
``poll``, ``maintain``). Worker replacements prepared elsewhere (a TPU re-probe, a model
update) are only *adopted* by the pipeline thread between frames, once the in-flight
frames have completed, so no frame is lost and none is decoded with the wrong model.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from edge_agent.errors import EdgeAgentError, WorkerError
from edge_agent.inference.codec import Codec
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.inference.worker import SLOTS, Buffers, WorkerHandle, WorkerInfo

logger = logging.getLogger(__name__)

CodecFactory = Callable[[WorkerInfo, ModelOptions], Codec]
EventSink = Callable[[str, dict[str, Any]], None]


class Generation(NamedTuple):
    """A running model: its options, worker, codec and metadata (name, version)."""

    options: ModelOptions
    worker: WorkerHandle
    codec: Codec
    meta: dict[str, Any]


class Completion(NamedTuple):
    """A finished frame: outputs are views valid until the slot is reused."""

    job: Any
    outputs: list[np.ndarray]
    invoke_ms: float
    generation: Generation


def forkserver_context() -> Any:
    """A forkserver context with the heavy imports preloaded: restarts take milliseconds."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["edge_agent.inference.worker", "ai_edge_litert.interpreter"])
    return ctx


class Supervisor:
    """Owns the worker generation and everything that can replace it.

    Args:
        options: the model to run.
        make_codec: builds the codec for a worker's tensors (raises ModelError if unfit).
        deadline: seconds an invoke may take before the worker counts as hung.
        reprobe_initial, reprobe_max: backoff for retrying a better backend.
        on_event: receives ("backend", ...), ("worker_restart", ...), ("model", ...) events.
        load_timeout: seconds a worker may take to load a model.
    """

    def __init__(
        self,
        options: ModelOptions,
        make_codec: CodecFactory,
        *,
        deadline: float = 5.0,
        reprobe_initial: float = 5.0,
        reprobe_max: float = 300.0,
        on_event: EventSink | None = None,
        load_timeout: float = 60.0,
        meta: dict[str, Any] | None = None,
        context: Any = None,
    ):
        self._options = options
        self._make_codec = make_codec
        self._deadline = deadline
        self._reprobe_initial = reprobe_initial
        self._reprobe_max = reprobe_max
        self._on_event = on_event or (lambda kind, detail: None)
        self._load_timeout = load_timeout
        self._meta = dict(meta or {})
        self._ctx = context or forkserver_context()
        self.generation: Generation | None = None
        self.previous: Generation | None = None
        self._buffers: Buffers | None = None
        self._free = list(range(SLOTS))
        self._inflight: dict[int, tuple[int, Any, float]] = {}  # seq -> (slot, job, t_submit)
        self._seq = 0
        self._skip: tuple[str, ...] = ()
        self._reprobe_delay = reprobe_initial
        self._reprobe_at: float | None = None
        # (generation to adopt, callback, keep the replaced one warm for a rollback)
        self._pending: tuple[Generation, Callable[[bool], None] | None, bool] | None = None
        self._broken: tuple[Generation, tuple[str, ...]] | None = None  # awaiting restart
        self._restart_at = 0.0
        self._restart_delay = 0.0
        # Decode settings changed at run time (SIGHUP); every generation installed
        # from then on gets them, whatever options it was prepared with.
        self._decoding: tuple[DecodeSettings, frozenset[str]] | None = None
        self._decoding_changed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._probe_thread: threading.Thread | None = None
        self.restarts = 0
        self.errors = 0  # worker deaths, hangs and invoke errors
        self.invoke_errors = 0  # frames the model itself failed on
        self.completed = 0
        self.last_error = ""

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Generation:
        """Start the first worker (blocking until the model is loaded).

        Raises:
            WorkerError / ModelError: no backend can run the model.
        """
        gen = self.prepare(self._options, self._meta)
        self._install(gen)
        return gen

    def prepare(
        self, options: ModelOptions, meta: dict[str, Any], skip: tuple[str, ...] = ()
    ) -> Generation:
        """Start a worker for ``options`` beside the running one and build its codec.

        Raises:
            WorkerError: the worker failed to load; ModelError: its outputs do not fit.
        """
        worker = WorkerHandle(
            options.request(), skip=skip, warmup=options.warmup, context=self._ctx
        )
        info = worker.start(self._load_timeout)
        try:
            codec = self._make_codec(info, options)
        except EdgeAgentError:
            worker.stop()
            raise
        return Generation(options, worker, codec, dict(meta))

    def _install(self, gen: Generation) -> None:
        """Make ``gen`` current: (re)use shared slots and hand them to its worker."""
        info = gen.worker.info
        if self._buffers is None or not self._buffers.fits(info):
            if self._buffers is not None:
                self._buffers.close()
            self._buffers = Buffers(info.input, info.outputs)
        gen.worker.attach(self._buffers)
        old = self.generation
        self._apply_decoding(gen)
        self.generation = gen
        self._skip = gen.worker.skip
        if old is None or old.worker.info.backend != info.backend:
            self._on_event(
                "backend",
                {
                    "backend": info.backend,
                    "model_path": info.model_path,
                    "previous": old.worker.info.backend if old else None,
                },
            )
        if self._skip and self._reprobe_at is None:
            self._reprobe_at = time.monotonic() + self._reprobe_delay

    def stop(self, timeout: float = 3.0) -> None:
        """Stop every worker and free the shared memory."""
        self._stop.set()
        if self._probe_thread is not None:
            self._probe_thread.join(timeout)
        with self._lock:
            pending, self._pending = self._pending, None
        gens = [g for g in (self.generation, self.previous, pending[0] if pending else None) if g]
        for gen in gens:
            gen.worker.stop(timeout / max(1, len(gens)))
        if self._buffers is not None:
            self._buffers.close()
            self._buffers = None

    # ---------------------------------------------------------------- frame path
    @property
    def inflight(self) -> int:
        """Frames submitted and not yet completed."""
        return len(self._inflight)

    def slot(self) -> tuple[int, np.ndarray] | None:
        """A free input slot to preprocess into, or None (busy, or a switch is pending)."""
        if (
            not self._free
            or self.generation is None
            or self._pending is not None
            or self._broken is not None
        ):
            return None
        slot = self._free[-1]
        return slot, self._buffers.inputs[slot]

    def submit(self, slot: int, job: Any) -> None:
        """Send the frame in ``slot`` to the worker; ``job`` comes back in its Completion."""
        self._free.remove(slot)
        self._seq += 1
        self._inflight[self._seq] = (slot, job, time.monotonic())
        try:
            self.generation.worker.submit(self._seq, slot)
        except WorkerError as exc:
            self._fail(str(exc))

    def poll(self, timeout: float) -> list[Completion]:
        """Collect finished frames, waiting up to ``timeout`` for the first one.

        Worker deaths, hangs and invoke errors are handled here: the worker is replaced
        (falling back to a worse backend when there is one) and the in-flight frames are
        resubmitted, so they are not lost.
        """
        done: list[Completion] = []
        if self._broken is not None:
            if time.monotonic() >= self._restart_at:
                self._restart()
            if self._broken is not None:
                self._stop.wait(timeout)
                return done
        gen = self.generation
        if gen is None or not self._inflight:
            return done
        wait = timeout
        while self._inflight:
            try:
                msg = gen.worker.receive(wait)
            except WorkerError as exc:
                self._fail(str(exc))
                return done
            if msg is None:
                oldest = min(t for _, _, t in self._inflight.values())
                if time.monotonic() - oldest > self._deadline:
                    gen.worker.kill()
                    self._fail(f"worker {gen.worker.pid} hung: no result in {self._deadline:.1f}s")
                return done
            kind, seq, slot = msg[0], msg[1], msg[2]
            entry = self._inflight.pop(seq, None)
            if entry is None:
                continue
            if kind == "done":
                done.append(Completion(entry[1], self._buffers.outputs[slot], msg[3], gen))
                self._free.append(slot)
                self.completed += 1
            elif gen.worker.info.has_fallback:  # the backend failed: fall back, retry
                self._inflight[seq] = entry
                self._fail(msg[3])
                return done
            else:
                # The last backend cannot run this frame: a model fault, not a device
                # fault. Restarting would fail the same way, so the frame is dropped and
                # counted (the update health check watches this counter).
                self.errors += 1
                self.invoke_errors += 1
                self.last_error = msg[3]
                self._free.append(slot)
                logger.warning("model %s: frame dropped: %s", gen.options.path, msg[3])
            wait = 0.0
        return done

    def _fail(self, reason: str) -> None:
        """Replace a failed worker, falling back when a worse backend remains."""
        gen = self.generation
        self.errors += 1
        self.last_error = reason
        info = gen.worker.info
        logger.warning("model %s: %s on %s", gen.options.path, reason, info.backend)
        gen.worker.kill()
        skip = self._skip + ((info.backend,) if info.has_fallback else ())
        if info.has_fallback:
            self._reprobe_delay = self._reprobe_initial
            self._reprobe_at = None
        self.restarts += 1
        self._on_event("worker_restart", {"reason": reason, "backend": info.backend})
        self._broken = (gen, skip)
        self._restart_delay = 0.0
        self._restart()

    def _restart(self) -> None:
        """Start the replacement worker and resubmit the in-flight frames to it."""
        gen, skip = self._broken
        try:
            new = self.prepare(gen.options, gen.meta, skip)
        except EdgeAgentError as exc:
            # Even the fallback cannot load: keep the frames and retry with backoff.
            self._restart_delay = min(max(1.0, self._restart_delay * 2), self._reprobe_max)
            self._restart_at = time.monotonic() + self._restart_delay
            self.last_error = str(exc)
            logger.error(
                "model %s: cannot restart the worker (retry in %.0fs): %s",
                gen.options.path,
                self._restart_delay,
                exc,
            )
            return
        self._broken = None
        self._install(new)
        for seq, (slot, job, _t) in sorted(self._inflight.items()):
            self._inflight[seq] = (slot, job, time.monotonic())
            new.worker.submit(seq, slot)

    # ------------------------------------------------------------------- switching
    def maintain(self) -> Generation | None:
        """Between frames: adopt a prepared worker and run due re-probes.

        Returns:
            The new generation when a switch happened (the pipeline refreshes its codec).
        """
        with self._lock:
            changed, self._decoding_changed = self._decoding_changed, False
        if changed and self.generation is not None:
            self._apply_decoding(self.generation)
        if self._reprobe_at is not None and time.monotonic() >= self._reprobe_at:
            self._start_probe()
        with self._lock:
            pending = self._pending
            if pending is None or self._inflight:
                return None
            self._pending = None
        gen, callback, keep_old = pending
        old = self.generation
        self._install(gen)
        self._on_event("model", {"model_path": gen.worker.info.model_path, **gen.meta})
        if callback is not None:
            callback(True)
        if old is not None:
            if gen.options == old.options or not keep_old:
                # Same model on a better backend, or a rollback: nothing to go back to.
                old.worker.stop(1.0)
            else:
                if self.previous is not None:
                    self.previous.worker.stop(1.0)
                self.previous = old
        return gen

    def set_decoding(self, settings: DecodeSettings, labels_filter: Iterable[str]) -> None:
        """Decode with these settings from the next frame on, in every later worker too.

        Thread-safe. The pipeline thread applies them between frames (in ``maintain``),
        and every generation installed afterwards (worker restart, fallback, re-probe,
        model switch, rollback) gets them, so a reloaded threshold survives those.

        Args:
            settings: threshold, top_k, iou, max_detections.
            labels_filter: labels to publish; empty = all.
        """
        with self._lock:
            self._decoding = (settings, frozenset(labels_filter))
            self._decoding_changed = True

    def _apply_decoding(self, gen: Generation) -> None:
        """Give ``gen``'s decoder the settings set by :meth:`set_decoding`, if any."""
        with self._lock:
            decoding = self._decoding
        if decoding is not None:
            gen.codec.decoder.settings, gen.codec.decoder.labels_filter = decoding

    def switch_to(
        self,
        gen: Generation,
        callback: Callable[[bool], None] | None = None,
        *,
        keep_old: bool = True,
    ) -> None:
        """Ask the pipeline thread to adopt ``gen`` between two frames (thread-safe).

        Args:
            gen: a generation from :meth:`prepare`.
            callback: called with True from the pipeline thread once adopted.
            keep_old: keep the replaced generation running for :meth:`rollback`.
        """
        with self._lock:
            if self._pending is not None:
                self._pending[0].worker.stop(1.0)
            self._pending = (gen, callback, keep_old)

    def rollback(self, callback: Callable[[bool], None] | None = None) -> bool:
        """Switch back to the previous generation (kept warm after a model switch).

        Returns:
            False when there is no previous generation.
        """
        prev = self.previous
        if prev is None or not prev.worker.alive():
            return False
        self.previous = None
        self.switch_to(prev, callback, keep_old=False)
        return True

    def commit(self) -> None:
        """The current model passed its health check: release the previous one."""
        prev, self.previous = self.previous, None
        if prev is not None:
            prev.worker.stop(1.0)

    def _start_probe(self) -> None:
        """Retry the better backends in the background (owned thread, stop event)."""
        self._reprobe_at = None
        if self._probe_thread is not None and self._probe_thread.is_alive():
            return
        gen = self.generation
        self._probe_thread = threading.Thread(
            target=self._probe, args=(gen,), name="tpu-reprobe", daemon=True
        )
        self._probe_thread.start()

    def _probe(self, gen: Generation) -> None:
        """Load the model with every backend allowed; adopt it if it got a better one."""
        try:
            cand = self.prepare(gen.options, gen.meta, ())
        except EdgeAgentError as exc:
            cand, reason = None, str(exc)
        else:
            reason = f"still on {cand.worker.info.backend}"
        if self._stop.is_set():
            if cand is not None:
                cand.worker.stop(1.0)
            return
        if cand is not None and cand.worker.info.rank < gen.worker.info.rank:
            logger.info("model %s: %s is back", gen.options.path, cand.worker.info.backend)
            self._reprobe_delay = self._reprobe_initial
            self.switch_to(cand)
            return
        if cand is not None:
            cand.worker.stop(1.0)
        self._reprobe_delay = min(self._reprobe_delay * 2, self._reprobe_max)
        self._reprobe_at = time.monotonic() + self._reprobe_delay
        logger.info(
            "model %s: re-probe failed (%s); next in %.0fs",
            gen.options.path,
            reason,
            self._reprobe_delay,
        )
