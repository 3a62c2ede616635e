"""The model states the daemon's update service publishes besides the installer's.

The installer reports each step of a request; the service adds what only the running
daemon knows: a release on trial still waiting for camera frames, a rollback answered by
a trial's switch back, and a request the daemon's stop cut short.
"""

from __future__ import annotations

from typing import Any

from edge_agent.updates.journal import INTERRUPTED
from edge_agent.updates.release import InstalledRelease

WAITING_FOR_FRAMES = "waiting_for_frames"


def waiting_state(
    release: InstalledRelease, frames: int, need: int, request_id: str | None
) -> dict[str, Any]:
    """``installing``/``waiting_for_frames``: the trial stays open until frames come."""
    return {
        "state": "installing",
        "name": release.name,
        "version": release.version,
        "percent": 100,
        "reason": WAITING_FOR_FRAMES,
        "message": (
            f"{frames} of {need} health-check frames inferred; {release.label} serves on "
            "trial until they are (the previous release stays the rollback target)"
        ),
        "request_id": request_id,
    }


def taken_rollback_state(
    now: InstalledRelease | None, request_id: str | None, from_version: str | None
) -> dict[str, Any]:
    """``rolled_back`` for a rollback command that a waiting trial's switch back carried out.

    Args:
        now: the active release after the switch back (None: the configured model).
        request_id: the rollback command's id.
        from_version: the release that was on trial.
    """
    return {
        "state": "rolled_back",
        "name": now.name if now else None,
        "version": now.version if now else None,
        "percent": 100,
        "reason": "requested",
        "message": "the release on trial, still waiting for frames, was switched back",
        "request_id": request_id,
        "from_version": from_version,
    }


def not_started(state: dict[str, Any], error: str) -> dict[str, Any]:
    """The startup state when the active release would not start and the daemon runs its
    configured model instead: ``active``/``fallback``, naming the release it left and why.

    Args:
        state: the startup state of the store's active release.
        error: why that release would not start.
    """
    label = f"{state.get('name')}@{state.get('version')}"
    why = f"{label} will not start ({error}); running the configured model"
    return {**state, "name": None, "version": None, "reason": "fallback",
            "message": why[:500], "from_version": label}  # fmt: skip


def interruption(state: dict[str, Any], last: dict[str, Any] | None) -> dict[str, Any]:
    """A state reported while the daemon stops, as the README's ``failed``/``interrupted``
    when the stop is what ended the request (other states unchanged).

    Args:
        state: the state reported.
        last: the state published before it (the request's in-progress state).
    """
    kind, reason = state.get("state"), state.get("reason")
    if kind == "failed" and reason == "cancelled":  # only shutdown cancels
        return {**state, "reason": INTERRUPTED, "message": "the daemon stopped mid-update"}
    if kind != "rolled_back" or reason != INTERRUPTED:
        return state
    # Neither model was found unhealthy: the store went back because of the stop, and
    # the state names the release requested, not the one serving on.
    asked = last if last and last.get("request_id") == state.get("request_id") else state
    doc = {k: v for k, v in state.items() if k != "from_version"}
    why = state.get("message") or "the daemon stopped mid-update"
    return {
        **doc,
        "state": "failed",
        "name": asked.get("name"),
        "version": asked.get("version"),
        "percent": None,
        "message": f"{why}; the previous model serves on; send the command again"[:500],
    }
