"""A settable monotonic clock for code that takes an injectable ``clock``."""

from __future__ import annotations


class FakeClock:
    """Returns ``now`` until a test moves it (``clock.now = 5.0``)."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now
