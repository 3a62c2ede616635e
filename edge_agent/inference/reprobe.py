"""When to retry a better backend: the supervisor's re-probe schedule (thread-safe).

The pipeline thread installs workers and starts due re-probes; the re-probe thread
reports how each ended. Both go through one lock here, so the timing has one owner.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from edge_agent.backoff import StableBackoff
from edge_agent.errors import EdgeAgentError
from edge_agent.inference.switching import RunningModel, SwitchOrigin, SwitchState

if TYPE_CHECKING:
    from edge_agent.inference.supervisor import Supervisor

logger = logging.getLogger(__name__)


class ReprobeSchedule:
    """Capped exponential re-probe timing while a worker runs on a fallback backend.

    The backoff starts over only once the better backend, back, has run for as long as
    it was waited for (:class:`StableBackoff`): a TPU that fails right after each return
    (a flapping USB link) is probed ever less often, not every ``initial`` seconds.

    Args:
        initial, maximum: the backoff between attempts, in seconds.
    """

    def __init__(self, initial: float, maximum: float):
        self._lock = threading.Lock()
        self._clock = time.monotonic
        self._backoff = StableBackoff(initial, maximum, clock=self._clock)
        self._at: float | None = None
        self._probing = False
        self.attempts = 0  # re-probes finished, successful or not

    def installed(self, degraded: bool) -> None:
        """A worker was installed; ``degraded`` when it skipped a better backend."""
        with self._lock:
            if not degraded:
                self._at = None  # on the best backend: nothing to re-probe
                self._backoff.succeeded()
            elif self._at is None and not self._probing:
                self._at = self._clock() + self._backoff.next()

    def fell_back(self) -> None:
        """A backend just failed: the next install schedules a re-probe (from the initial
        delay again if that backend had run for as long as it was waited for)."""
        with self._lock:
            self._at = None

    def claim(self) -> bool:
        """True when a re-probe is due and none runs; the caller then runs one."""
        with self._lock:
            if self._at is None or self._probing or self._clock() < self._at:
                return False
            self._at, self._probing = None, True
            return True

    def finished(self, switched: bool, degraded: bool) -> float | None:
        """A re-probe ended; returns the delay to the next one, or None (none needed)."""
        with self._lock:
            self.attempts += 1
            self._probing = False
            if switched or not degraded:
                return None  # switched: its install starts the stable-run clock
            delay = self._backoff.next()
            self._at = self._clock() + delay
            return delay


class Reprober:
    """Runs re-probes in one owned thread: load the model with every backend allowed,
    and ask the supervisor to switch when that found a better one.

    Args:
        supervisor: prepares workers and takes the switch request.
        schedule: when to probe; told how each probe ended.
        stop: the supervisor's stop event.
    """

    def __init__(self, supervisor: Supervisor, schedule: ReprobeSchedule, stop: threading.Event):
        self._sup = supervisor
        self._schedule = schedule
        self._stop = stop
        self._thread: threading.Thread | None = None

    def start(self, basis: RunningModel | None) -> None:
        """Probe for ``basis`` in the background (the schedule granted the claim)."""
        if self._thread is not None:
            self._thread.join(1.0)  # done: it reported to the schedule before returning
        if basis is None or self._stop.is_set():
            self._schedule.finished(switched=False, degraded=False)
            return
        self._thread = threading.Thread(
            target=self._run, args=(basis,), name="tpu-reprobe", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for a running probe (the stop event is set: its load is given up)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, basis: RunningModel) -> None:
        """The probe thread's body."""
        try:
            cand = self._sup.prepare(basis.options, basis.meta, (), cancel=self._stop)
        except EdgeAgentError as exc:
            self.offer(basis, None, str(exc))
        else:
            self.offer(basis, cand, f"still on {cand.worker.info.backend}")

    def offer(self, basis: RunningModel, cand: RunningModel | None, reason: str) -> None:
        """Switch to a re-probed worker if it got a better backend than ``basis``;
        otherwise stop it and schedule the next re-probe.

        The switch has the lowest priority (SwitchOrigin.REPROBE): it is refused while a
        model update or a rollback is pending, or when ``basis``'s model no longer runs.
        """
        switched = False
        if cand is not None and cand.worker.info.rank < basis.worker.info.rank:
            ticket = self._sup.switches.switch_to(cand, keep_old=False, origin=SwitchOrigin.REPROBE)
            switched = ticket.state is SwitchState.PENDING
            if switched:
                logger.info("model %s: %s is back", basis.options.path, cand.worker.info.backend)
            else:
                reason = f"{cand.worker.info.backend} is back, but another switch outranks it"
        elif cand is not None:
            cand.worker.stop(1.0)
        current = self._sup.current
        degraded = current is not None and current.degraded and not self._stop.is_set()
        delay = self._schedule.finished(switched, degraded)
        if delay is not None:
            logger.info(
                "model %s: re-probe failed (%s); next in %.0fs", basis.options.path, reason, delay
            )
