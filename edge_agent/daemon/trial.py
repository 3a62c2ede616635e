"""The health check of a model just switched in: judged on frames it really inferred.

A release on trial is confirmed only after ``updates.health_frames`` frames went through
it without an invoke error or a worker death. Frames cannot be invented: while the
cameras are down (or detection is off on all of them) the trial stays open, however long
that takes. The new model keeps serving, the previous release stays the rollback target
and the trial mark stays on disk (a restart meanwhile goes back, as after a crash).

The wait ends with a verdict (:class:`Outcome`): the frames came and were inferred
(``HEALTHY``), one of them failed (``UNHEALTHY``), the daemon is stopping (``STOPPED``:
it proves nothing either way), or, once the short ``grace`` has passed without enough
frames, another model command that would change the model is waiting (``SUPERSEDED``:
a trial with no frames must not hold every later command back; what counts as such is
the caller's ``yield_to``, see :mod:`edge_agent.daemon.update_inbox`).
"""

from __future__ import annotations

import threading
import time
from enum import Enum
from typing import Callable, NamedTuple

POLL = 0.05


class Outcome(Enum):
    """How a health check ended."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"
    SUPERSEDED = "superseded"


class Verdict(NamedTuple):
    """The end of a health check: the outcome, what it saw (for the state's message)."""

    outcome: Outcome
    detail: str
    frames: int


class Counters(NamedTuple):
    """The supervisor's running totals the health check compares."""

    completed: int
    errors: int
    last_error: str


def judge(start: Counters, now: Counters, need: int) -> Verdict | None:
    """The verdict of the frames since ``start``, or None while fewer than ``need`` came.

    A single failure decides at once: the new model is not healthy.
    """
    frames = now.completed - start.completed
    errors = now.errors - start.errors
    if errors > 0:
        detail = f"{errors} failure(s) in its first frames: {now.last_error}"
        return Verdict(Outcome.UNHEALTHY, detail, frames)
    if frames >= need:
        return Verdict(Outcome.HEALTHY, f"{frames} frames inferred", frames)
    return None


class HealthWatch:
    """Waits for the verdict on a model on trial (see the module docstring).

    Args:
        counters: the supervisor's totals now.
        need: frames that must be inferred (``updates.health_frames``).
        stop: set when the daemon stops.
        grace: seconds after which too few frames is reported (``on_waiting``) and a
            waiting command may end the wait.
        on_waiting: called once with the frames seen so far, when the grace has passed.
        yield_to: what ends the wait for another command (a description), or None;
            asked only after the grace.
        clock: monotonic clock (tests).
    """

    def __init__(
        self,
        counters: Callable[[], Counters],
        need: int,
        stop: threading.Event,
        *,
        grace: float,
        on_waiting: Callable[[int], None],
        yield_to: Callable[[], str | None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self._counters = counters
        self._need = need
        self._stop = stop
        self._grace = grace
        self._on_waiting = on_waiting
        self._yield_to = yield_to
        self._clock = clock

    def run(self) -> Verdict:
        """Watch until a verdict (blocks; polls every 50 ms)."""
        start = self._counters()
        waiting_since = self._clock() + self._grace
        waiting = False
        while True:
            now = self._counters()
            frames = now.completed - start.completed
            if self._stop.is_set():
                # Shutting down mid-check proves nothing either way.
                detail = f"the daemon stopped after {frames} of {self._need} health-check frames"
                return Verdict(Outcome.STOPPED, detail, frames)
            verdict = judge(start, now, self._need)
            if verdict is not None:
                return verdict
            if not waiting and self._clock() >= waiting_since:
                waiting = True
                self._on_waiting(frames)
            if waiting:
                other = self._yield_to()
                if other is not None:
                    detail = (
                        f"{other} while its health check waited for frames "
                        f"({frames} of {self._need} inferred)"
                    )
                    return Verdict(Outcome.SUPERSEDED, detail, frames)
            self._stop.wait(POLL)
