"""Supervises the inference worker: failover, TPU re-probing, and model hot swap.

The pipeline thread is the only caller of the frame-path methods (``slot``, ``submit``,
``poll``, ``apply_pending``). Worker replacements prepared elsewhere (a TPU re-probe, a
model update, a rollback) are requested through ``Supervisor.switches`` and only
*adopted* by the pipeline thread between frames, once the in-flight frames have
completed, so no frame is lost and none is decoded with the wrong model.

State shared between threads (the pending switch, the model kept for a rollback, the
current model, the re-probe schedule, the decode settings) has one owner: every
transition takes its owner's lock. Workers are stopped and callbacks called outside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from edge_agent.errors import EdgeAgentError, WorkerError
from edge_agent.inference.codec import Codec
from edge_agent.inference.crash_loop import MAX_DEATHS, CrashLoop
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.inference.reprobe import Reprober, ReprobeSchedule
from edge_agent.inference.slots import SLOTS, Buffers
from edge_agent.inference.switching import (
    BackendChanged,
    Completion,
    DecodeOverride,
    EventSink,
    RunningModel,
    SupervisorEvent,
    Switchboard,
    WorkerRestarted,
)
from edge_agent.inference.worker import Cancel, Done, WorkerHandle, WorkerInfo, forkserver_context

logger = logging.getLogger(__name__)

CodecFactory = Callable[[WorkerInfo, ModelOptions], Codec]
WorkerFactory = Callable[..., WorkerHandle]


class Supervisor:
    """Owns the running model and everything that can replace it.

    Args:
        options: the model to run.
        make_codec: builds the codec for a worker's tensors (raises ModelError if unfit).
        deadline: seconds an invoke may take before the worker counts as hung.
        reprobe_initial, reprobe_max: backoff for retrying a better backend (also caps
            the backoff for restarting a worker that cannot load).
        on_event: receives (SupervisorEvent, payload) pairs.
        load_timeout: seconds a worker may take to load a model.
        worker_factory: builds a WorkerHandle (tests inject cheap doubles).
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
        worker_factory: WorkerFactory = WorkerHandle,
    ):
        self._options = options
        self._make_codec = make_codec
        self._deadline = deadline
        self._on_event = on_event or (lambda event, payload: None)
        self._load_timeout = load_timeout
        self._meta = dict(meta or {})
        self._ctx = context or forkserver_context()
        self._worker_factory = worker_factory
        self._stop = threading.Event()
        # Shared state, each part with one owner and its lock: the pending switch and
        # the rollback model (Switchboard), the re-probe timing (ReprobeSchedule), the
        # decode settings (DecodeOverride). ``current`` is written by the pipeline thread only.
        self.switches = Switchboard(lambda: self.current)
        self._reprobe = ReprobeSchedule(reprobe_initial, reprobe_max)
        self._reprober = Reprober(self, self._reprobe, self._stop)
        self._decoding = DecodeOverride()
        self.current: RunningModel | None = None
        # Pipeline thread only.
        self._buffers: Buffers | None = None
        self._free = list(range(SLOTS))
        self._inflight: dict[int, tuple[int, Any, float]] = {}  # seq -> (slot, job, t_submit)
        self._seq = 0
        self._broken: tuple[RunningModel, tuple[str, ...]] | None = None  # awaiting restart
        self._unannounced = False  # a switch whose worker poll() is still (re)starting
        self._crashes = CrashLoop(reprobe_max)  # restart backoff, the frame a worker dies on
        self.restarts = 0
        self.errors = 0  # worker deaths, hangs and invoke errors
        self.invoke_errors = 0  # frames dropped: the model failed on them, or could not rerun
        self.completed = 0
        self.decoding_changes = 0  # decode settings applied live (thresholds, ...)
        self.last_error = ""

    # ----------------------------------------------------------------- lifecycle
    def start(self, cancel: Cancel | None = None) -> RunningModel:
        """Start the first worker, blocking until the model is loaded (or ``cancel`` is set).

        Raises:
            WorkerError / ModelError: no backend can run the model, or the load was cancelled.
        """
        self._install(model := self.prepare(self._options, self._meta, cancel=cancel))
        return model

    def prepare(
        self, options: ModelOptions, meta: dict[str, Any], skip: tuple[str, ...] = (),
        cancel: Cancel | None = None,
    ) -> RunningModel:  # fmt: skip
        """Start a worker for ``options`` beside the running one and build its codec.

        A backend whose loading kills or hangs the worker is skipped and the next one tried;
        ``cancel`` (set) gives the load up, whatever the backend.

        Raises:
            WorkerError: the worker failed to load; ModelError: its outputs do not fit.
        """
        while True:
            worker = self._worker_factory(
                options.request(), skip=skip, warmup=options.warmup, context=self._ctx
            )
            try:
                info = worker.start(self._load_timeout, cancel)
                break
            except WorkerError as exc:
                # Loading on this backend killed or hung the worker (a libedgetpu abort):
                # load again without it; the re-probe retries it later, with backoff.
                if exc.backend is None or exc.backend in skip:
                    raise
                logger.error(
                    "model %s: loading on %s failed (%s); trying the next backend",
                    options.path, exc.backend, exc,
                )  # fmt: skip
                self.last_error = str(exc)
                skip = (*skip, exc.backend)
        try:
            codec = self._make_codec(info, options)
        except EdgeAgentError:
            worker.stop()
            raise
        return RunningModel(options, worker, codec, dict(meta))

    def _install(self, model: RunningModel) -> bool:
        """Make ``model`` current: (re)use shared slots and hand them to its worker.

        Returns:
            False when its tensors took new slots (what the old ones held is gone).
        """
        info = model.worker.info
        self._buffers, kept = Buffers.reuse(self._buffers, info)
        model.worker.attach(self._buffers)
        self._decoding.apply(model)
        old, self.current = self.current, model
        self._reprobe.installed(degraded=model.degraded)
        if old is None or old.worker.info.backend != info.backend:
            previous = old.worker.info.backend if old else None
            self._on_event(
                SupervisorEvent.BACKEND, BackendChanged(info.backend, info.model_path, previous)
            )
        return kept

    def stop(self, timeout: float = 3.0) -> None:
        """Stop every worker and free the shared memory; a pending switch is cancelled."""
        self._stop.set()
        self._reprober.join(timeout)
        models = [m for m in (self.current, *self.switches.close()) if m]
        for model in models:
            model.worker.stop(timeout / max(1, len(models)))
        if self._buffers is not None:
            self._buffers.close()
            self._buffers = None

    # ---------------------------------------------------------------- frame path
    @property
    def inflight(self) -> int:
        """Frames submitted and not yet completed."""
        return len(self._inflight)

    def inflight_jobs(self) -> list[Any]:
        """The jobs of the frames in flight, oldest first."""
        return [job for _, job, _ in self._inflight.values()]

    def slot(self) -> tuple[int, np.ndarray] | None:
        """A free input slot to preprocess into, or None (busy, or a switch is pending)."""
        busy = not self._free or self._broken is not None or self.switches.pending is not None
        if busy or self.current is None:
            return None
        slot = self._free[-1]
        return slot, self._buffers.inputs[slot]

    def submit(self, slot: int, job: Any) -> None:
        """Send the frame in ``slot`` to the worker; ``job`` comes back in its Completion."""
        self._free.remove(slot)
        self._seq += 1
        self._inflight[self._seq] = (slot, job, time.monotonic())
        try:
            self.current.worker.submit(self._seq, slot)
        except WorkerError as exc:
            self._fail(str(exc))

    def poll(self, timeout: float) -> list[Completion]:
        """Collect finished frames, waiting up to ``timeout`` for the first one.

        Worker deaths, hangs and invoke errors are handled here: the worker is replaced
        (falling back to a worse backend when there is one) and the in-flight frames are
        resubmitted, so they are not lost.
        """
        done: list[Completion] = []
        if self._buffers is not None:
            self._buffers.release()  # the last poll's Completions were decoded
        if self._broken is not None:
            if time.monotonic() >= self._crashes.restart_at:
                self._restart()
            if self._broken is not None:
                self._stop.wait(timeout)
                return done
        model = self.current
        if model is None or not self._inflight:
            return done
        wait = timeout
        while self._inflight:
            try:
                msg = model.worker.receive(wait)
            except WorkerError as exc:
                self._fail(str(exc))
                return done
            if msg is None:
                oldest = min(t for _, _, t in self._inflight.values())
                if time.monotonic() - oldest > self._deadline:
                    model.worker.kill()
                    self._fail(
                        f"worker {model.worker.pid} hung: no result in {self._deadline:.1f}s"
                    )
                return done
            entry = self._inflight.pop(msg.seq, None)
            if entry is None:
                continue
            if isinstance(msg, Done):
                outputs = self._buffers.outputs[msg.slot]
                done.append(Completion(entry[1], outputs, msg.invoke_ms, model))
                self._free.append(msg.slot)
                self.completed += 1
            elif model.worker.info.has_fallback:  # the backend failed: fall back, retry
                self._inflight[msg.seq] = entry
                self._fail(msg.message)
                return done
            else:
                # The last backend cannot run this frame: a model fault, not a device
                # fault. Restarting would fail the same way, so the frame is dropped.
                self._drop(msg.slot, msg.message)
            wait = 0.0
        return done

    def _fail(self, reason: str) -> None:
        """Replace a failed worker, falling back when a worse backend remains.

        The one failover for the daemon: the replacement worker opens the model with
        ``Engine.open`` minus the failed backend, the same ranking ``infer`` uses.
        """
        model = self.current
        self.errors += 1
        self.last_error = reason
        info = model.worker.info
        logger.warning("model %s: %s on %s", model.options.path, reason, info.backend)
        model.worker.kill()
        oldest = min(self._inflight, default=None)  # the frame it was running
        if self._crashes.died(oldest):  # it killed MAX_DEATHS workers: give up on it
            self._drop(self._inflight.pop(oldest)[0], f"it killed {MAX_DEATHS} workers ({reason})")
        skip = model.worker.skip + ((info.backend,) if info.has_fallback else ())
        if info.has_fallback:
            self._reprobe.fell_back()
        self.restarts += 1
        self._on_event(SupervisorEvent.WORKER_RESTART, WorkerRestarted(reason, info.backend))
        self._broken = (model, skip)
        self._restart()

    def _drop(self, slot: int, reason: str) -> None:
        """Give up on the frame in ``slot`` (the update health check counts these)."""
        self.errors += 1
        self.invoke_errors += 1
        self.last_error = reason
        self._free.append(slot)
        logger.warning("model %s: frame dropped: %s", self.current.options.path, reason)

    def _restart(self) -> None:
        """Start the replacement worker and resubmit the in-flight frames to it."""
        model, skip = self._broken
        try:
            new = self.prepare(model.options, model.meta, skip, self._stop)
        except EdgeAgentError as exc:
            # Keep the frames; retry with backoff on every backend (the failed one may be back).
            self._broken, self.last_error = (model, ()), str(exc)
            delay = self._crashes.load_failed()
            logger.error(
                "model %s: cannot restart the worker (retry in %.0fs): %s",
                model.options.path, delay, exc,
            )  # fmt: skip
            return
        self._broken = None
        if not self._install(new):  # a twin of another layout: the frames' pixels are gone
            for seq in sorted(self._inflight):
                self._drop(self._inflight.pop(seq)[0], "preprocessed for the failed worker")
        for seq, (slot, job, _t) in sorted(self._inflight.items()):
            self._inflight[seq] = (slot, job, time.monotonic())
            new.worker.submit(seq, slot)

    # ------------------------------------------------------------------- switching
    def apply_pending(self) -> RunningModel | None:
        """Between frames: apply new decode settings, start a due re-probe, and adopt a
        requested switch once no frame is in flight.

        Returns:
            The new model when a switch happened (the pipeline refreshes its codec).
        """
        if self._decoding.take_changed() and self.current is not None:
            self._decoding.apply(self.current)
            self.decoding_changes += 1
        if self._reprobe.claim():
            self._reprober.start(self.current)
        if self._unannounced and self._broken is None and not self._inflight:
            self._unannounced = False  # poll() has now started the switch's worker
            return self._announce()
        if self._inflight or self._broken is not None or self.switches.pending is None:
            return None
        ticket = self.switches.take(self.current)
        if ticket is None:
            return None
        if not ticket.adopted:
            logger.warning("model %s: switch refused at adoption", ticket.model.options.path)
            self.switches.release(ticket)
            if self.current is not None:
                self._reprobe.installed(degraded=self.current.degraded)
            return None
        old = self.current
        if ticket.model.worker.alive():
            self._install(ticket.model)
        else:
            # A rollback's warm worker died: the store went back, so the pipeline must
            # too, on a fresh worker (poll() retries it with backoff). The model rolled
            # back from goes now; status and re-probes name the one being restarted.
            if old is not None:
                old.worker.stop(1.0)
                old = None
            self.current = ticket.model
            self._broken = (ticket.model, ())
            self._crashes.reset()
            self._restart()
        ticket.resolve()
        if self._broken is not None:
            # The pipeline must still learn of the switch (its motion references and
            # last results are the old model's): announced once poll() starts it.
            self._unannounced = True
            return None
        model = self._announce()
        if old is not None and old is not model:
            # Same model on a better backend, or a rollback: nothing to go back to.
            keep = ticket.keep_old and ticket.model.options != old.options
            drop = self.switches.replaced(old, keep)
            if drop is not None:
                drop.worker.stop(1.0)
        return model

    def _announce(self) -> RunningModel:
        """Report the model now serving as switched to, and return it."""
        self._on_event(SupervisorEvent.MODEL, self.current.switched())
        return self.current

    def set_decoding(self, settings: DecodeSettings, labels_filter: Iterable[str]) -> None:
        """Decode with these settings from the next frame on, in every later worker too
        (thread-safe; see :class:`DecodeOverride`)."""
        self._decoding.set(settings, labels_filter)

    # -------------------------------------------------------------------- re-probe
    @property
    def reprobes(self) -> int:
        """Re-probe attempts finished (tests wait on it)."""
        return self._reprobe.attempts

    def offer_reprobe(self, basis: RunningModel, cand: RunningModel | None, reason: str) -> None:
        """Hand a re-probe's result over (see :meth:`Reprober.offer`; thread-safe)."""
        self._reprober.offer(basis, cand, reason)
