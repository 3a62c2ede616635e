"""Captures over captures: what ``read()`` gives changes, the rest is the inner one's."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sources opens captures that are wrapped ones
    from edge_agent.capture.sources import Capture


class WrappedCapture:
    """A :class:`~edge_agent.capture.sources.Capture` passing all but ``read()`` (which a
    subclass defines) to the capture it wraps."""

    def __init__(self, cap: Capture):
        self._cap = cap

    def isOpened(self) -> bool:
        return self._cap.isOpened()

    def get(self, prop: int) -> float:
        return self._cap.get(prop)

    def set(self, prop: int, value: float) -> bool:
        return self._cap.set(prop, value)

    def release(self) -> None:
        self._cap.release()
