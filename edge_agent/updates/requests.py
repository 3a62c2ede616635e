"""Answered model requests, so that a repeated command gets its answer again.

QoS 1 delivers a command at least once and operators retry, so the same command can
arrive many times. A command is known by its ``request_id`` plus a digest of the
command (kind and payload): while it is queued or running, a repeat is dropped (the
answer that ends it is published under that id anyway); once answered, a repeat gets
the same final state again instead of running a second time. A different command that
reuses an id is a new request.

The answers are kept in memory, bounded (oldest forgotten first), and persisted in
``{state_dir}/models/requests.json`` with an atomic write, so a command redelivered
after a restart is answered, not re-run. ``busy`` and ``cancelled`` are not answers to
remember, nor is ``interrupted`` (the daemon stopped first): the same command sent later
must run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

from edge_agent.atomicfile import write_atomic

logger = logging.getLogger(__name__)

LEDGER_FILE = "requests.json"
DEFAULT_LIMIT = 256
_MAX_FILE_BYTES = 4 * 1024 * 1024
_TRANSIENT = frozenset({"busy", "cancelled", "interrupted"})


class RequestKey(NamedTuple):
    """A request: its id and the digest of the command that carried it."""

    request_id: str
    digest: str


def request_key(kind: str, request_id: str | None, payload: bytes) -> RequestKey | None:
    """The key of a command (None without a request id: it cannot be recognised)."""
    if request_id is None:
        return None
    digest = hashlib.sha256(kind.encode() + b"\0" + bytes(payload)).hexdigest()
    return RequestKey(request_id, digest)


class Seen(Enum):
    """What :meth:`RequestLedger.admit` knows of a command."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    ANSWERED = "answered"


class RequestLedger:
    """Requests queued, running or answered; thread-safe.

    Args:
        path: the persisted answers (None: memory only).
        limit: answers remembered (oldest forgotten first).
    """

    def __init__(self, path: Path | None, limit: int = DEFAULT_LIMIT):
        self.path = path
        self.limit = max(1, limit)
        self._lock = threading.Lock()
        self._pending: set[RequestKey] = set()
        # By id and digest: a command that reuses an id does not erase the first's answer.
        self._answers: OrderedDict[RequestKey, dict[str, Any]] = self._load()

    def admit(self, key: RequestKey) -> tuple[Seen, dict[str, Any] | None]:
        """Note a command arriving: NEW (now pending), IN_PROGRESS, or ANSWERED + answer."""
        with self._lock:
            if key in self._pending:
                return Seen.IN_PROGRESS, None
            known = self._answers.get(key)
            if known is not None:
                return Seen.ANSWERED, dict(known)
            self._pending.add(key)
            return Seen.NEW, None

    def answer_of(self, key: RequestKey) -> dict[str, Any] | None:
        """The remembered answer of this very command (id and digest), or None."""
        with self._lock:
            known = self._answers.get(key)
            return None if known is None else dict(known)

    def forget(self, key: RequestKey) -> None:
        """The command left without an answer to remember (refused as busy, shutdown)."""
        with self._lock:
            self._pending.discard(key)

    def answer(self, key: RequestKey, state: dict[str, Any] | None) -> None:
        """Record the final state of a request and persist the answers (errors logged)."""
        remember = state is not None and state.get("reason") not in _TRANSIENT
        with self._lock:
            self._pending.discard(key)
            if not remember:
                return
            self._answers.pop(key, None)
            self._answers[key] = dict(state)
            while len(self._answers) > self.limit:
                self._answers.popitem(last=False)
            snapshot = [
                {"request_id": rid, "digest": digest, "answer": doc}
                for (rid, digest), doc in self._answers.items()
            ]
        self._save(snapshot)

    def _save(self, snapshot: list[dict[str, Any]]) -> None:
        """Persist the answers; a failure only costs idempotency across a restart."""
        if self.path is None:
            return
        try:
            write_atomic(self.path, json.dumps(snapshot, separators=(",", ":")).encode())
        except (OSError, TypeError, ValueError) as exc:
            logger.error("model update: cannot record answered requests in %s: %s", self.path, exc)

    def _load(self) -> OrderedDict[RequestKey, dict[str, Any]]:
        """The persisted answers (empty when missing; a damaged file is logged and ignored)."""
        out: OrderedDict[RequestKey, dict[str, Any]] = OrderedDict()
        if self.path is None:
            return out
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read(_MAX_FILE_BYTES + 1)[:_MAX_FILE_BYTES])
        except FileNotFoundError:
            return out
        except (OSError, ValueError) as exc:
            logger.warning("model update: %s unreadable (%s); starting afresh", self.path, exc)
            return out
        if not isinstance(data, list):
            logger.warning("model update: %s is no JSON list; starting afresh", self.path)
            return out
        for item in data:
            if (
                isinstance(item, dict)
                and isinstance(item.get("request_id"), str)
                and isinstance(item.get("digest"), str)
                and isinstance(item.get("answer"), dict)
            ):
                key = RequestKey(item["request_id"], item["digest"])
                out.pop(key, None)
                out[key] = item["answer"]
        while len(out) > self.limit:
            out.popitem(last=False)
        return out
