"""A worker that keeps dying: the frame it dies on is dropped; a worker that cannot load
is retried with a backoff.

A frame can kill the worker itself (a runtime or delegate crash on one input, a hang).
Resubmitted after every restart, it would kill each new worker in turn and hold every
camera's frames behind it for ever. The worker runs frames in the order they were
submitted, so the oldest frame in flight is the one it was running when it died: once
the same frame was the oldest at ``MAX_DEATHS`` deaths, it is dropped and counted.

A dead worker is replaced at once (each frame costs at most ``MAX_DEATHS`` restarts, and
a model update that kills workers is rolled back by its health check, which counts the
dropped frames); a replacement that cannot load is retried after 1 s, doubling.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge_agent.backoff import Backoff

MAX_DEATHS = 2  # deaths with the same frame oldest in flight before it is dropped


class CrashLoop:
    """Restart timing and the suspect frame of one supervisor (pipeline thread only).

    Args:
        max_delay: the longest wait before a restart (the backoff's cap, at least 1 s).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, max_delay: float, clock: Callable[[], float] = time.monotonic):
        self._backoff = Backoff(1.0, max(1.0, max_delay))
        self._clock = clock
        self._suspect: int | None = None  # the oldest frame in flight at the last death
        self._deaths = 0  # deaths it has been the oldest at
        self.restart_at = 0.0  # monotonic time the replacement worker may start

    def died(self, oldest: int | None) -> bool:
        """A worker died (or hung and was killed) with ``oldest`` its oldest frame in
        flight (None: no frame); its replacement may start at once.

        Returns:
            True when that frame has now been the oldest at ``MAX_DEATHS`` deaths: drop it.
        """
        if oldest is not None and oldest == self._suspect:
            self._deaths += 1
        else:
            self._suspect, self._deaths = oldest, 1
        self.reset()
        return oldest is not None and self._deaths >= MAX_DEATHS

    def load_failed(self) -> float:
        """The replacement worker could not load: the delay until the next try."""
        delay = self._backoff.next()
        self.restart_at = self._clock() + delay
        return delay

    def reset(self) -> None:
        """A new worker is to start now (after a death, or a rollback's)."""
        self._backoff.reset()
        self.restart_at = self._clock()
