"""The states a model request goes through, as published on ``{prefix}/{id}/model``."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any


class UpdateState(str, Enum):
    """One step of a request; the value is the string published in ``"state"``."""

    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    ACTIVE = "active"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"

    @property
    def terminal(self) -> bool:
        """True for the states that end a request."""
        return self in TERMINAL


TERMINAL = frozenset({UpdateState.ACTIVE, UpdateState.FAILED, UpdateState.ROLLED_BACK})


class UpdateJob:
    """One request as its states report it; ``final`` is its terminal state, once sent.

    Args:
        on_final: called with the terminal state just *before* it is published, so
            whoever reacts to the answer finds it already recorded.
    """

    def __init__(
        self,
        request_id: str | None = None,
        on_final: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.request_id = request_id
        self.name: str | None = None
        self.version: str | None = None
        self.final: dict[str, Any] | None = None
        self.on_final = on_final

    @property
    def label(self) -> str:
        """What to call the request in logs."""
        name = f"{self.name}@{self.version}" if self.name else "(unknown release)"
        return f"{name} request {self.request_id}" if self.request_id else name
