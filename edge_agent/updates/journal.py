"""The model requests not yet answered, kept on disk, so a request cut short still ends.

A SIGTERM or a power cut in the middle of an update would otherwise leave its request,
and every command queued behind it, without a final state: the next start publishes the
serving model, under no request id, and an operator waiting for those ids waits forever.
:class:`RequestJournal` keeps ``{state_dir}/update-request.json`` (atomic writes):

* the runner records each command it queues (:meth:`RequestJournal.queue`) and moves it
  to ``running`` when it starts it (:meth:`RequestJournal.begin`);
* the running request's record follows the in-progress states the installer reports
  (rewritten when its name, version or state changes: a few writes per request, never
  one per percent, to spare SD cards), so it names the step the request was in;
* its final state removes it. The model topic is durable (spooled until delivered), so
  a final state published at a stop (``interrupted``) is not published again at the
  next start;
* a rollback a trial waiting for frames takes is held (:meth:`RequestJournal.hold`)
  until the trial's switch back answers it;
* at the next start, :meth:`RequestJournal.take` returns the running request left, and
  the daemon publishes its final state (:func:`final_state`): ``active`` when the store's
  active release is the one the update installed (it was confirmed just before the
  stop), ``rolled_back`` when a rollback had switched the store, else ``failed`` with
  reason ``interrupted``. The record keeps the command's digest, so that answer goes into
  the request ledger as the runner's answers do (:meth:`PendingRequest.key`). The runner
  answers every request still queued (:meth:`RequestJournal.take_queued`)
  ``failed``/``interrupted``: it never ran.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from edge_agent.atomicfile import fsync_path, write_atomic
from edge_agent.updates.requests import RequestKey

logger = logging.getLogger(__name__)

FILE_NAME = "update-request.json"
IN_PROGRESS = ("downloading", "verifying", "installing")
FINAL = ("active", "failed", "rolled_back")
INTERRUPTED = "interrupted"
STARTING = "starting"  # taken off the queue, no state reported yet
UPDATE, ROLLBACK = "update", "rollback"
# What a request was doing, for the message of its ``interrupted`` answer.
_DOING = {
    STARTING: "about to start",
    "downloading": "downloading",
    "verifying": "being verified",
    "installing": "being installed (switch or health check)",
}


class PendingRequest(NamedTuple):
    """A request that had started when the daemon last stopped."""

    request_id: str | None
    name: str | None
    version: str | None
    state: str  # the last in-progress state recorded
    kind: str = UPDATE  # "update" or "rollback"
    digest: str | None = None  # of the command (see ``requests.py``), None in old records

    def key(self) -> RequestKey | None:
        """The request's ledger key: its answer is remembered as the runner's are."""
        if self.request_id is None or self.digest is None:
            return None
        return RequestKey(self.request_id, self.digest)


class RequestJournal:
    """Records the running and the queued model requests under ``state_dir`` (thread-safe).

    The previous run's queued requests stay recorded until answered (see
    :meth:`take_queued`); its running one stays on disk until :meth:`clear`.

    Args:
        state_dir: the daemon's state directory.
    """

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.path = Path(state_dir) / FILE_NAME
        self._lock = threading.Lock()
        # Only the queued requests carry over: the running one left on disk is answered
        # (take, clear) by the daemon before anything new is recorded.
        self._current: PendingRequest | None = None
        _, self._queued, self._held = self._read()
        self._previous = tuple(self._queued)  # what the last run left: take_queued()
        self._previous_held = dict(self._held)  # and take_held()

    def queue(self, request_id: str) -> None:
        """Record a command queued behind the running one (before it is queued)."""
        with self._lock:
            self._queued.append(request_id)
            self._persist()

    def hold(self, key: RequestKey) -> None:
        """Record a rollback a trial waiting for frames took (its switch back answers it)."""
        with self._lock:
            self._held[key.request_id] = key.digest
            self._persist()

    def unqueue(self, request_id: str) -> None:
        """Forget a queued or held command (refused, answered, or queued after all)."""
        with self._lock:
            held = self._held.pop(request_id, None) is not None
            if request_id in self._queued:
                self._queued.remove(request_id)
                held = True
            if held:
                self._persist()

    def begin(self, request_id: str | None, kind: str, digest: str | None = None) -> None:
        """A command leaves the queue and starts: it is the running request now.

        Args:
            digest: the command's digest (its ledger key with ``request_id``).
        """
        with self._lock:
            if request_id in self._queued:
                self._queued.remove(request_id)
            self._current = PendingRequest(request_id, None, None, STARTING, kind, digest)
            self._persist()

    def observe(self, state: Mapping[str, Any], *, stopping: bool = False) -> None:
        """Note one reported state (never raises: a full disk must not fail the update).

        Args:
            state: the state dict the installer reported.
            stopping: the daemon is shutting down. Accepted for the caller's sake: a
                final state reported while stopping ends the record like any other,
                since the model topic delivers it even across the restart.
        """
        del stopping  # see above: no longer changes what is kept
        kind = state.get("state")
        rid = state.get("request_id")
        with self._lock:
            current = self._current
            if kind in IN_PROGRESS:
                same = current is not None and current.request_id == rid
                new = PendingRequest(
                    rid,
                    _text(state.get("name")),
                    _text(state.get("version")),
                    str(kind),
                    current.kind if same and current is not None else UPDATE,
                    current.digest if same and current is not None else None,
                )
                if new != current:
                    self._current = new
                    self._persist()
                return
            if kind not in FINAL or current is None or rid != current.request_id:
                return
            if state.get("reason") == "busy":
                return  # a refused duplicate of the running request: it still runs
            self._current = None
            self._persist()

    def take(self) -> PendingRequest | None:
        """The running request recorded on disk (the previous run's at startup), or None."""
        return self._read()[0]

    def take_queued(self) -> list[str]:
        """The request ids the previous run left queued (not those queued since)."""
        with self._lock:
            return list(self._previous)

    def take_held(self) -> list[RequestKey]:
        """The rollbacks the previous run's trial had taken and not answered: the trial was
        cut short, and startup recovery went back from it, as their switch back would."""
        with self._lock:
            return [RequestKey(rid, digest) for rid, digest in self._previous_held.items()]

    def clear(self) -> None:
        """Forget the running request (its final state was published); queued ones stay."""
        with self._lock:
            self._current = None
            self._persist()

    def _read(self) -> tuple[PendingRequest | None, list[str], dict[str, str]]:
        """The running, queued and held requests on disk (never raises: damage is logged)."""
        try:
            doc = json.loads(self.path.read_bytes())
            queued = [q for q in doc.get("queued", ()) if isinstance(q, str)]
            held = doc.get("held")
            held = held if isinstance(held, dict) else {}
            held = {k: v for k, v in held.items() if isinstance(v, str)}
            return _running(doc), queued, held
        except FileNotFoundError:
            return None, [], {}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            logger.error("model update: %s unreadable (%s); ignoring it", self.path, exc)
            return None, [], {}

    def _persist(self) -> None:
        """Write the record, or remove it when nothing is left (lock held)."""
        if self._current is None and not self._queued and not self._held:
            self._remove()
            return
        doc = {
            "running": None if self._current is None else self._current._asdict(),
            "queued": self._queued,
            "held": self._held,
        }
        try:
            write_atomic(self.path, json.dumps(doc, separators=(",", ":")).encode(), mode=0o600)
        except OSError as exc:
            logger.error("model update: cannot record requests in %s: %s", self.path, exc)

    def _remove(self) -> None:
        """Delete the record for good (lock held): synced, a power cut cannot bring it
        back, and the next start answer the request a second time."""
        try:
            self.path.unlink()
            fsync_path(self.path.parent)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.error("model update: cannot remove %s: %s", self.path, exc)


def _running(doc: Mapping[str, Any]) -> PendingRequest | None:
    """The running request of a record (older agents wrote it at the top level)."""
    item = doc.get("running", doc if "state" in doc else None)
    if not isinstance(item, Mapping):
        return None
    return PendingRequest(
        _text(item.get("request_id")),
        _text(item.get("name")),
        _text(item.get("version")),
        _text(item.get("state")) or "downloading",
        ROLLBACK if item.get("kind") == ROLLBACK else UPDATE,
        _text(item.get("digest")),
    )


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
    reached = pending.name is not None and active == (pending.name, pending.version)
    if reached and pending.kind == ROLLBACK:
        return {**doc, "state": "rolled_back", "percent": 100, "reason": "requested",
                "message": None}  # fmt: skip
    if reached:
        return {**doc, "state": "active", "percent": 100, "reason": None, "message": None}
    doing = _DOING.get(pending.state, pending.state)
    return {
        **doc,
        "state": "failed",
        "percent": None,
        "reason": INTERRUPTED,
        "message": (
            f"the daemon stopped while this {pending.kind} was {doing}; "
            "the model it was serving kept serving; send the command again"
        ),
    }


def _text(value: Any) -> str | None:
    """A string field of the record, or None."""
    return value if isinstance(value, str) else None
