"""The states a model request goes through, as published on ``{prefix}/{id}/model``."""

from __future__ import annotations

from enum import Enum


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
