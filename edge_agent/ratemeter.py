"""The one event-rate meter, shared by the cameras (capture fps) and the pipeline stats."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, NamedTuple


class _Tick(NamedTuple):
    """``n`` events recorded at monotonic time ``at``."""

    at: float
    n: int


class RateMeter:
    """Events per second over a sliding time window, and the age of the last event.

    The rate is the number of events after the oldest one in the window divided by the
    time since that oldest event, so a steady stream reads exactly its frequency even
    before the window fills, and a stalled stream decays to 0 as events age out.
    Thread-safe: producers tick and readers read from any thread.

    Args:
        window: seconds of history considered.
        clock: monotonic clock in seconds (injectable for tests).
        max_entries: memory bound on stored ticks; older ticks are dropped first.

    Raises:
        ValueError: if ``window`` is not positive or ``max_entries`` < 2.
    """

    def __init__(
        self,
        window: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 4096,
    ):
        if not window > 0:
            raise ValueError(f"rate window must be positive, got {window!r}")
        if max_entries < 2:
            raise ValueError(f"max_entries must be >= 2, got {max_entries}")
        self._window = window
        self._clock = clock
        self._ticks: deque[_Tick] = deque(maxlen=max_entries)
        self._last: float | None = None  # kept after its tick ages out of the window
        self._lock = threading.Lock()

    @property
    def window(self) -> float:
        """Seconds of history behind :meth:`rate`."""
        return self._window

    def tick(self, n: int = 1) -> None:
        """Record ``n`` events happening now (``n`` <= 0 is ignored)."""
        if n <= 0:
            return
        with self._lock:
            now = self._clock()
            self._ticks.append(_Tick(now, n))
            self._last = now

    def rate(self) -> float:
        """Events per second over the window; 0.0 with fewer than two ticks in it."""
        with self._lock:
            now = self._clock()
            horizon = now - self._window
            while self._ticks and self._ticks[0].at < horizon:
                self._ticks.popleft()
            if len(self._ticks) < 2:
                return 0.0
            elapsed = now - self._ticks[0].at
            if elapsed <= 0:
                return 0.0
            # Events of the first tick only mark the start of the measured span.
            events = sum(tick.n for tick in self._ticks) - self._ticks[0].n
            return events / elapsed

    def age(self) -> float | None:
        """Seconds since the last event, None before the first."""
        with self._lock:
            return None if self._last is None else self._clock() - self._last
