"""The update request in progress, kept on disk, so a request cut short still ends.

A SIGTERM or a power cut in the middle of an update would otherwise leave its request
without a final state: the next start publishes the serving model, under no request id,
and an operator waiting for that id waits forever. :class:`RequestJournal` watches the
states the installer reports:

* the first in-progress state of a request writes ``{state_dir}/update-request.json``
  (atomically; once per request, not per percent, to spare SD cards);
* its final state removes the file, except a failure because the daemon stopped
  (reason ``interrupted``): that answer may never have left the box;
* at the next start, :meth:`RequestJournal.take` returns what was left, and the daemon
  publishes its final state: ``active`` when the store's active release is the one the
  request installed (it was confirmed just before the stop), else ``failed`` with reason
  ``interrupted``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from edge_agent.atomicfile import write_atomic

logger = logging.getLogger(__name__)

FILE_NAME = "update-request.json"
IN_PROGRESS = ("downloading", "verifying", "installing")
FINAL = ("active", "failed", "rolled_back")
INTERRUPTED = "interrupted"


class PendingRequest(NamedTuple):
    """A request that had started when the daemon last stopped."""

    request_id: str | None
    name: str | None
    version: str | None
    state: str  # the last in-progress state recorded


class RequestJournal:
    """Records the update request in progress under ``state_dir`` (thread-safe).

    Args:
        state_dir: the daemon's state directory.
    """

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.path = Path(state_dir) / FILE_NAME
        self._lock = threading.Lock()
        self._current: PendingRequest | None = None

    def observe(self, state: Mapping[str, Any], *, stopping: bool = False) -> None:
        """Note one reported state (never raises: a full disk must not fail the update).

        Args:
            state: the state dict the installer reported.
            stopping: the daemon is shutting down (an ``interrupted`` failure then stays
                recorded, to be published again at the next start).
        """
        kind = state.get("state")
        rid = state.get("request_id")
        with self._lock:
            current = self._current
            if kind in IN_PROGRESS:
                new = PendingRequest(rid, state.get("name"), state.get("version"), str(kind))
                if current is None or current[:3] != new[:3]:
                    self._current = new
                    self._write(new)
                return
            if kind not in FINAL or current is None or rid != current.request_id:
                return
            if state.get("reason") == "busy":
                return  # a refused duplicate of the running request: it still runs
            self._current = None
            if stopping and state.get("reason") == INTERRUPTED:
                return
            self._remove()

    def take(self) -> PendingRequest | None:
        """The request left in progress by the previous run, or None (never raises)."""
        try:
            doc = json.loads(self.path.read_bytes())
            return PendingRequest(
                _text(doc.get("request_id")),
                _text(doc.get("name")),
                _text(doc.get("version")),
                _text(doc.get("state")) or "downloading",
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError) as exc:
            logger.error("model update: %s unreadable (%s); ignoring it", self.path, exc)
            return None

    def clear(self) -> None:
        """Forget the recorded request (its final state was published)."""
        with self._lock:
            self._current = None
            self._remove()

    def _write(self, pending: PendingRequest) -> None:
        """Persist the request in progress (lock held)."""
        data = json.dumps(pending._asdict(), separators=(",", ":")).encode()
        try:
            write_atomic(self.path, data, mode=0o600)
        except OSError as exc:
            logger.error("model update: cannot record request in %s: %s", self.path, exc)

    def _remove(self) -> None:
        """Delete the record (lock held)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.error("model update: cannot remove %s: %s", self.path, exc)


def final_state(pending: PendingRequest, active: tuple[str, str] | None) -> dict[str, Any]:
    """The final state to publish for a request the previous run left in progress.

    Args:
        pending: what :meth:`RequestJournal.take` returned.
        active: (name, version) of the store's active release after recovery, or None.
    """
    doc: dict[str, Any] = {
        "name": pending.name,
        "version": pending.version,
        "request_id": pending.request_id,
    }
    if (
        active is not None
        and pending.name is not None
        and active
        == (
            pending.name,
            pending.version,
        )
    ):
        return {**doc, "state": "active", "percent": 100, "reason": None, "message": None}
    return {
        **doc,
        "state": "failed",
        "percent": None,
        "reason": INTERRUPTED,
        "message": (
            f"the daemon stopped while this update was {pending.state}; "
            "the previous model kept serving; send the command again"
        ),
    }


def _text(value: Any) -> str | None:
    """A string field of the record, or None."""
    return value if isinstance(value, str) else None
