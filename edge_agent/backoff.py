"""The one capped exponential backoff, shared by cameras, the MQTT link, the inference
supervisor and downloads."""

from __future__ import annotations

import random


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
