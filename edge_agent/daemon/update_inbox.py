"""Model commands on their way to the update runner.

Two moments need more than a hand-over:

* **Startup.** The daemon subscribes to its commands before the model is loaded and the
  runner started (that can take seconds on a Pi loading the TPU delegate). Commands that
  arrive meanwhile are kept, in order, up to ``updates.queue_depth``, and handed to the
  runner when it starts; more are refused ``busy`` under their request id, never dropped.
* **A trial waiting for frames.** A rollback command sent while a release on trial waits
  for camera frames is what ends that trial: the inbox takes it (see :meth:`yield_to`)
  instead of queueing it behind the wait, and the service answers it once the trial has
  gone back. Queued behind, it would run after the trial's switch back and go one more
  release back.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, NamedTuple

from edge_agent.updates.agent import UpdateRunner
from edge_agent.updates.commands import ROLLBACK, command_kind, peek_request_id
from edge_agent.updates.requests import RequestKey, Seen, request_key

logger = logging.getLogger(__name__)

Reject = Callable[[str, str, "str | None"], None]


class Held(NamedTuple):
    """A command kept back from the runner (``key``: its ledger key, for a taken rollback)."""

    command: str
    payload: bytes
    topic: str
    key: RequestKey | None = None

    @property
    def request_id(self) -> str | None:
        """The request id the command carries, if any."""
        return peek_request_id(self.payload)


class CommandInbox:
    """Routes model commands to the runner (thread-safe; :meth:`handle` never blocks).

    Args:
        limit: commands kept before the runner starts; more are refused ``busy``.
        reject: ``reject(reason, message, request_id)`` publishes a refusal.
    """

    def __init__(self, limit: int, reject: Reject):
        self._limit = max(1, limit)
        self._reject = reject
        self._lock = threading.Lock()
        self._runner: UpdateRunner | None = None
        self._early: list[Held] = []
        self._taking = False
        self._taken: list[Held] = []

    def handle(self, command: str, payload: bytes, topic: str) -> None:
        """Keep (startup), take (a rollback during a waiting trial) or forward a command."""
        refuse = False
        with self._lock:
            runner = self._runner
            if runner is None:
                if len(self._early) < self._limit:
                    logger.info("command %s on %.64r before startup; kept", command, topic)
                    self._early.append(Held(command, bytes(payload), topic))
                    return
                refuse = True
            elif self._taking and self._take(runner, command, payload, topic):
                return
        if refuse:
            logger.error("command %s on %.64r before startup; too many kept", command, topic)
            self._reject(
                "busy",
                f"{self._limit} model commands already waiting for the daemon to start; "
                "send it again later",
                peek_request_id(payload),
            )
            return
        runner.handle(command, payload, topic)

    def _take(self, runner: UpdateRunner, command: str, payload: bytes, topic: str) -> bool:
        """Take a new rollback command for the waiting trial (lock held); False: not one."""
        kind = command_kind(f"x/cmd/{command}" if command else topic)
        if kind != ROLLBACK:
            return False
        key = request_key(kind, peek_request_id(payload), payload)
        if key is not None:
            seen, _ = runner.ledger.admit(key)
            if seen is not Seen.NEW:
                return False  # a repeat: the runner drops it or answers it again
        logger.info("model update: rollback %s ends the trial waiting for frames", topic[:64])
        self._taken.append(Held(command, bytes(payload), topic, key))
        return True

    def attach(self, runner: UpdateRunner) -> None:
        """The runner started: hand it the commands kept meanwhile, in order."""
        with self._lock:
            self._runner = runner
            early, self._early = self._early, []
            for held in early:  # never blocks: the runner only files them
                runner.handle(held.command, held.payload, held.topic)
        if early:
            logger.info("model update: %d command(s) kept during startup handed over", len(early))

    def drain(self) -> list[Held]:
        """The commands still kept (the daemon stops before the runner started)."""
        with self._lock:
            early, self._early = self._early, []
            return early

    def open_trial(self) -> None:
        """A trial waits for frames: rollbacks from now on are taken for it."""
        with self._lock:
            self._taking = True

    def yield_to(self) -> str | None:
        """What a waiting trial must give way to: a rollback taken, a queued command."""
        with self._lock:
            if self._taken:
                rid = self._taken[0].request_id
                return f"rollback request {rid} arrived" if rid else "a rollback arrived"
            if self._runner is not None and self._runner.pending > 0:
                return "another model command is queued"
            return None

    def close_trial(self) -> list[Held]:
        """The trial ended: stop taking rollbacks; the ones taken, for the caller to answer."""
        with self._lock:
            self._taking = False
            taken, self._taken = self._taken, []
            return taken

    def forward(self, held: Held) -> None:
        """Queue a taken rollback after all (the trial was confirmed: it runs as usual)."""
        with self._lock:
            runner = self._runner
        if runner is None:
            return
        if held.key is not None:
            runner.ledger.forget(held.key)  # admitted when taken; the runner admits it again
        runner.handle(held.command, held.payload, held.topic)
