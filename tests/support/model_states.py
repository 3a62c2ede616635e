"""The model states a device publishes, collected for tests to wait on (no fixed sleeps)."""

from __future__ import annotations

import threading
from typing import Any, Callable

TERMINAL = ("active", "failed", "rolled_back")  # the final states of a request

State = dict[str, Any]


class States:
    """Called with each published state; the wait methods block until one matches."""

    def __init__(self):
        self.items: list[State] = []
        self.cond = threading.Condition()

    def __call__(self, state: State) -> None:
        with self.cond:
            self.items.append(state)
            self.cond.notify_all()

    def of(self, rid: str) -> list[State]:
        """Every state published under request id ``rid``."""
        return [s for s in self.items if s["request_id"] == rid]

    def finals(self, rid: str) -> list[State]:
        """The final states published under ``rid``."""
        return [s for s in self.of(rid) if s["state"] in TERMINAL]

    def wait(self, test: Callable[[list[State]], bool], timeout: float = 20.0) -> None:
        """Wait until ``test`` holds for the states so far."""
        with self.cond:
            assert self.cond.wait_for(lambda: test(self.items), timeout), self.items

    def matching(self, pred: Callable[[State], bool], timeout: float = 10.0) -> State:
        """Wait for a state matching ``pred``; the latest such state."""
        with self.cond:
            assert self.cond.wait_for(lambda: any(pred(s) for s in self.items), timeout), self.items
            return [s for s in self.items if pred(s)][-1]

    def final(self, rid: str, timeout: float = 20.0) -> State:
        """Wait for the first final state of ``rid``."""
        self.wait(lambda items: bool(self.finals(rid)), timeout)
        return self.finals(rid)[0]

    def wait_finals(self, rids: list[str], timeout: float = 20.0) -> None:
        """Wait until every request id in ``rids`` has a final state."""
        with self.cond:
            ok = self.cond.wait_for(lambda: all(self.finals(r) for r in rids), timeout)
        assert ok, [s for s in self.items if s["state"] in TERMINAL]

    def waiting(self, rid: str) -> None:
        """Wait until ``rid`` says its trial waits for frames."""
        self.wait(lambda items: any(s.get("reason") == "waiting_for_frames" for s in self.of(rid)))
