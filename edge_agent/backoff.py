"""The one capped exponential backoff, shared by cameras, the MQTT link, the inference
supervisor and downloads."""

from __future__ import annotations

import random
import time
from typing import Callable


class Backoff:
    """Capped exponential delays: initial, 2x initial, ... maximum, maximum, ...

    Args:
        initial: the first delay, in seconds (> 0).
        maximum: the cap (a cap below ``initial`` is raised to it).
        jitter: the fraction a delay may be shortened at random, 0..1 (0.5 gives delays
            in [d/2, d]), so that a fleet retrying the same server does not stampede.
        rng: the random source for the jitter (injectable for tests).

    Raises:
        ValueError: a non-positive initial delay, or jitter outside 0..1.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ):
        if not initial > 0:
            raise ValueError(f"backoff initial delay must be positive, got {initial!r}")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"backoff jitter must be within 0..1, got {jitter!r}")
        self.initial = initial
        self.maximum = max(maximum, initial)
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._next = initial

    @property
    def upcoming(self) -> float:
        """The un-jittered delay the next call to :meth:`next` is based on."""
        return self._next

    def next(self) -> float:
        """The delay to wait now; doubles the following one up to the maximum."""
        delay = self._next
        self._next = min(self._next * 2.0, self.maximum)
        if self.jitter:
            delay *= self._rng.uniform(1.0 - self.jitter, 1.0)
        return delay

    def reset(self) -> None:
        """Back to the initial delay (after a success)."""
        self._next = self.initial


class StableBackoff(Backoff):
    """A :class:`Backoff` that a success resets only once it has lasted as long as the delay
    waited before it. A peer that fails right after each success (a camera dropping every
    stream after its first frame) keeps backing off instead of being retried at ``initial``
    forever, while one that works longer than it is waited for (a stream dropping every few
    seconds) is still retried at ``initial``: it is up at least half the time.

    Args:
        initial, maximum: as for :class:`Backoff`.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self, initial: float, maximum: float, *, clock: Callable[[], float] = time.monotonic
    ):
        super().__init__(initial, maximum)
        self._clock = clock
        self._since: float | None = None  # when the current success began
        self._waited = 0.0  # the delay handed out last

    def succeeded(self) -> None:
        """A success began now (a camera's first frame since it was reopened)."""
        self._since = self._clock()

    def next(self) -> float:
        """The delay to wait after a failure: from ``initial`` again when the success
        before it lasted the delay waited before that success, else doubling on."""
        since, self._since = self._since, None
        if since is not None and self._clock() - since >= self._waited:
            self.reset()
        self._waited = super().next()
        return self._waited
