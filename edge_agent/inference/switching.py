"""The supervisor's vocabulary: the loaded model, its events, and switch requests.

A switch request returns a :class:`SwitchTicket`, the requester's handle: it can wait
on it, and cancel it while it is still pending, so a request that timed out can never
be adopted later. Requests have a priority (:class:`SwitchOrigin`): a pending switch is
displaced only by a request of the same or a higher priority, so a TPU re-probe never
displaces a model update's or a rollback's pending switch.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Union

import numpy as np

from edge_agent.inference.codec import Codec
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.inference.worker import WorkerHandle

logger = logging.getLogger(__name__)


class RunningModel(NamedTuple):
    """A running worker plus its codec: the model's options, worker, codec and metadata."""

    options: ModelOptions
    worker: WorkerHandle
    codec: Codec
    meta: dict[str, Any]

    @property
    def degraded(self) -> bool:
        """True when a better backend was skipped: it failed (``skip``), or it was
        unavailable here at load (no device yet): the re-probe looks for it again."""
        return bool(self.worker.skip or self.worker.info.absent)

    def switched(self) -> ModelSwitched:
        """The event that reports this model as the one now serving."""
        meta = self.meta
        version = str(meta.get("version", ""))
        return ModelSwitched(self.worker.info.model_path, meta.get("name", ""), version)


class Completion(NamedTuple):
    """A finished frame: outputs are views valid until the slot is reused."""

    job: Any
    outputs: list[np.ndarray]
    invoke_ms: float
    model: RunningModel


class SupervisorEvent(enum.Enum):
    """What the supervisor reports to its owner (the value is the log word)."""

    BACKEND = "backend"  # payload: BackendChanged
    WORKER_RESTART = "worker_restart"  # payload: WorkerRestarted
    MODEL = "model"  # payload: ModelSwitched


class BackendChanged(NamedTuple):
    """A worker on another backend (or the first one) was installed."""

    backend: str
    model_path: str
    previous: str | None


class WorkerRestarted(NamedTuple):
    """A worker died, hung or failed, and is being replaced."""

    reason: str
    backend: str


class ModelSwitched(NamedTuple):
    """A prepared model was adopted between frames."""

    model_path: str
    name: str
    version: str


EventPayload = Union[BackendChanged, WorkerRestarted, ModelSwitched]  # "|" on classes: 3.10+
EventSink = Callable[[SupervisorEvent, EventPayload], None]


class SwitchOrigin(enum.IntEnum):
    """Who asked for a switch; a higher value outranks a lower one.

    A re-probe only moves the same model to a better backend and is retried later, so
    it yields to everything. A model update's switch is awaited by the update thread.
    A rollback restores the model the store already went back to, so nothing displaces it.
    """

    REPROBE = 0
    UPDATE = 1
    ROLLBACK = 2


class SwitchState(enum.Enum):
    """Where a switch request stands."""

    PENDING = "pending"
    ADOPTED = "adopted"
    CANCELLED = "cancelled"  # by its requester, or because the supervisor stopped
    DISPLACED = "displaced"  # a request of the same or higher priority replaced it
    REFUSED = "refused"  # outranked on arrival, stale, or its worker died before adoption


class SwitchTicket:
    """A switch request: wait on it, or cancel it through :meth:`Supervisor.cancel`.

    The supervisor changes ``state`` under its lock; ``callback`` (if any) is called
    once with True (adopted) or False (not adopted), outside that lock.
    """

    def __init__(
        self,
        model: RunningModel,
        origin: SwitchOrigin,
        callback: Callable[[bool], None] | None,
        keep_old: bool,
    ):
        self.model = model
        self.origin = origin
        self.keep_old = keep_old
        self.state = SwitchState.PENDING
        self._callback = callback
        self._resolved = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Wait until the request is resolved; True when it was (adopted or not)."""
        return self._resolved.wait(timeout)

    @property
    def adopted(self) -> bool:
        """True once the pipeline runs this model."""
        return self.state is SwitchState.ADOPTED

    def resolve(self) -> None:
        """Tell the requester (callback, waiters); called once, after ``state`` is final."""
        if self._resolved.is_set():
            return
        self._resolved.set()
        if self._callback is not None:
            self._callback(self.adopted)

    def __repr__(self) -> str:
        return f"SwitchTicket({self.origin.name}, {self.state.value}, {self.model.options.path})"


class Switchboard:
    """The one owner of the pending switch and of the model kept for a rollback.

    Every transition takes the lock; workers are stopped and requesters told outside it.
    The pipeline thread takes a pending request (:meth:`take`); the update thread and
    the re-probe thread request, cancel, roll back and commit.

    Args:
        current: returns the running model (re-probe requests must match it).
    """

    def __init__(self, current: Callable[[], RunningModel | None]):
        self.lock = threading.Lock()
        self._current = current  # the running model (written by the pipeline thread)
        self.pending: SwitchTicket | None = None
        self.previous: RunningModel | None = None
        self.closed = False

    def switch_to(
        self,
        model: RunningModel,
        callback: Callable[[bool], None] | None = None,
        *,
        keep_old: bool = True,
        origin: SwitchOrigin = SwitchOrigin.UPDATE,
    ) -> SwitchTicket:
        """Ask the pipeline thread to adopt ``model`` between two frames.

        From here the switchboard owns ``model``: it stops its worker if the request is
        refused (the supervisor stopped, a pending request outranks it, or it is a
        re-probe for a model that no longer runs), displaced or cancelled.

        Args:
            model: from ``Supervisor.prepare``.
            callback: called once with True (adopted, from the pipeline thread) or False.
            keep_old: keep the replaced model running for :meth:`rollback`.
            origin: the requester; a pending switch of higher priority is not displaced.

        Returns:
            The ticket to wait on or to :meth:`cancel`.
        """
        ticket = SwitchTicket(model, origin, callback, keep_old)
        current = self._current()
        with self.lock:
            stale = origin is SwitchOrigin.REPROBE and (
                current is None or model.options != current.options
            )
            displaced = None
            if self.closed or stale or (self.pending and self.pending.origin > origin):
                ticket.state = SwitchState.REFUSED
            else:
                displaced, self.pending = self.pending, ticket
                if displaced is not None:
                    displaced.state = SwitchState.DISPLACED
        for gone in (displaced, ticket if ticket.state is SwitchState.REFUSED else None):
            if gone is not None:
                logger.info("model %s: switch %s", gone.model.options.path, gone.state.value)
                self.release(gone)
        return ticket

    def cancel(self, ticket: SwitchTicket) -> bool:
        """Withdraw a switch request.

        Returns:
            True when it will never be adopted; False when it already was.
        """
        with self.lock:
            if ticket.state is SwitchState.ADOPTED:
                return False
            if self.pending is not ticket:
                return True
            self.pending = None
            ticket.state = SwitchState.CANCELLED
        self.release(ticket)
        return True

    def rollback(self, callback: Callable[[bool], None] | None = None) -> SwitchTicket | None:
        """Switch back to the previous model (kept warm after a model switch).

        If its worker died meanwhile, the supervisor starts a fresh one at adoption.

        Returns:
            The ticket, or None when there is no previous model.
        """
        with self.lock:
            prev, self.previous = self.previous, None
        if prev is None:
            return None
        return self.switch_to(prev, callback, keep_old=False, origin=SwitchOrigin.ROLLBACK)

    def commit(self) -> None:
        """The current model passed its health check: release the previous one."""
        with self.lock:
            prev, self.previous = self.previous, None
        if prev is not None:
            prev.worker.stop(1.0)

    def take(self, current: RunningModel | None) -> SwitchTicket | None:
        """The pending request, decided: ADOPTED, or REFUSED when it must not run.

        A worker that died while pending is refused, except a rollback's: the store
        already went back, so the supervisor restarts that model instead.
        """
        with self.lock:
            ticket, self.pending = self.pending, None
            if ticket is None:
                return None
            stale = ticket.origin is SwitchOrigin.REPROBE and (
                current is None or ticket.model.options != current.options
            )
            dead = not ticket.model.worker.alive()
            refused = stale or (dead and ticket.origin is not SwitchOrigin.ROLLBACK)
            ticket.state = SwitchState.REFUSED if refused else SwitchState.ADOPTED
            return ticket

    def release(self, ticket: SwitchTicket) -> None:
        """A request that will not be adopted: tell its requester, free its worker.

        A rollback's model goes back to being the previous one while it lives.
        """
        ticket.resolve()
        if ticket.origin is SwitchOrigin.ROLLBACK:
            with self.lock:
                if self.previous is None and ticket.model.worker.alive() and not self.closed:
                    self.previous = ticket.model
                    return
        ticket.model.worker.stop(1.0)

    def replaced(self, old: RunningModel, keep: bool) -> RunningModel | None:
        """``old`` stopped serving: keep it for a rollback or not; returns what to stop."""
        with self.lock:
            if not keep:
                return old
            drop, self.previous = self.previous, old
            return drop

    def close(self) -> list[RunningModel]:
        """Refuse every later request; cancel the pending one; the models to stop."""
        with self.lock:
            self.closed = True
            pending, self.pending = self.pending, None
            prev, self.previous = self.previous, None
            if pending is not None:
                pending.state = SwitchState.CANCELLED
        if pending is not None:
            pending.resolve()
        return [m for m in (prev, pending and pending.model) if m is not None]


class DecodeOverride:
    """Decode settings changed at run time (SIGHUP), owned here under one lock.

    The pipeline thread applies them between frames, and every model installed from then
    on (worker restart, fallback, re-probe, model switch, rollback) gets them, whatever
    options it was prepared with, so a reloaded threshold survives those.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: tuple[DecodeSettings, frozenset[str]] | None = None
        self._changed = False

    def set(self, settings: DecodeSettings, labels_filter: Iterable[str]) -> None:
        """New settings (threshold, top_k, iou, max_detections) and labels (empty = all)."""
        value = (settings, frozenset(labels_filter))
        with self._lock:
            if value != self._value:  # a reload that changed nothing here is no change
                self._value = value
                self._changed = True

    def take_changed(self) -> bool:
        """True once after each :meth:`set` that changed the settings."""
        with self._lock:
            changed, self._changed = self._changed, False
            return changed

    def apply(self, model: RunningModel) -> None:
        """Give ``model``'s decoder the overriding settings, if any were set."""
        with self._lock:
            value = self._value
        if value is not None:
            model.codec.decoder.settings, model.codec.decoder.labels_filter = value


def switched(
    switches: Switchboard,
    ticket: SwitchTicket,
    timeout: float,
    stop: threading.Event | None = None,
) -> bool:
    """Wait until the pipeline adopts a switch; after ``timeout`` (or once ``stop`` is
    set) withdraw it, so a model the caller gives up on is never adopted later (it is
    stopped). True when adopted."""
    deadline = time.monotonic() + timeout
    while not ticket.wait(max(0.0, min(0.05, deadline - time.monotonic()))):
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return not switches.cancel(ticket)  # False: adopted just before the cancel
    return ticket.adopted
