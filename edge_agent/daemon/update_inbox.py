"""Model commands on their way to the update runner.

Two moments need more than a hand-over:

* **Startup.** The daemon subscribes to its commands before the model is loaded and the
  runner started (that can take seconds on a Pi loading the TPU delegate). Commands that
  arrive meanwhile are kept, in order, up to ``updates.queue_depth``, and handed to the
  runner when it starts; more are refused ``busy`` under their request id, never dropped.
  A repeat of a kept command (same kind, payload and request id) is dropped, as the runner
  drops a repeat of a queued one: refused ``busy``, it would get a second answer.
  Each kept one is recorded in the request journal as queued, so that a crash or a power
  cut before the runner starts still gets it answered (``interrupted``) at the next start.
* **A trial waiting for frames.** A rollback command sent while a release on trial waits
  for camera frames is what ends that trial: the inbox takes it (see :meth:`yield_to`)
  instead of queueing it behind the wait, and the service answers it once the trial has
  gone back (it is held in the request journal meanwhile, so that after a power cut
  the next start, whose recovery goes back from the trial, answers it ``rolled_back``).
  Queued behind, it would run after the trial's switch back and go one more release
  back. A rollback already queued when the trial began
  (sent while the update downloaded or verified) is taken out of the runner's queue the
  same way. The trial gives way only to a command that would change the model
  (:func:`acts`): a command that cannot parse is answered at once (it fails whatever
  runs first), and an update the checks before any download would refuse (not newer than
  the release on trial, that release again...) stays queued, to be answered once the
  frames have judged the trial. An update given as ``manifest_url`` is judged on the
  manifest fetched for the purpose, on a thread of its own so that the frames go on
  judging the trial meanwhile (one that cannot be fetched stays queued too); it is
  fetched again when it runs.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, NamedTuple

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.agent import Queued, UpdateRunner
from edge_agent.updates.commands import (
    ROLLBACK,
    command_kind,
    parse_rollback_command,
    parse_update_command,
    peek_request_id,
)
from edge_agent.updates.installer import UpdateInstaller
from edge_agent.updates.journal import RequestJournal
from edge_agent.updates.requests import RequestKey, RequestLedger, Seen, request_key

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


def acts(installer: UpdateInstaller, command: Queued) -> bool:
    """Whether a queued command would change the model if it ran now: a rollback, or an
    update the checks before any download accept (a waiting trial gives way only to one).

    Raises:
        ModelUpdateError: the payload does not parse (it fails whenever it runs).
    """
    if command.kind == ROLLBACK:
        parse_rollback_command(command.payload)
        return True  # it ends the trial: the trial's switch back is the rollback asked for
    parsed = parse_update_command(command.payload, installer.settings.policy())
    try:
        # A manifest_url is fetched now as well (under the download deadlines): a trial
        # must not go back for a release that turns out not newer, or unreachable.
        _, existing = installer.precheck(installer.envelope_of(parsed), parsed.force)
    except ModelUpdateError:
        return False  # refused when it runs, against the release the trial leaves
    return existing is None or not installer.store.is_active(existing)


def _kind(command: str, topic: str) -> str | None:
    """The command kind of a message, from the part of its topic after ``/cmd/``."""
    return command_kind(f"x/cmd/{command}" if command else topic)


class _Judging:
    """:func:`acts` of one queued update, on its own thread: its manifest may be fetched,
    and the trial's health check must go on watching the frames meanwhile."""

    def __init__(self, installer: UpdateInstaller, command: Queued):
        self.acts: bool | None = None
        self.error: ModelUpdateError | None = None
        self.done = threading.Event()
        # Ends with the fetch: its download deadlines, or the stop's cancel (joined then).
        self.thread = threading.Thread(
            target=self._run, args=(installer, command), name="model-judge", daemon=True
        )
        self.thread.start()

    def _run(self, installer: UpdateInstaller, command: Queued) -> None:
        try:
            self.acts = acts(installer, command)
        except ModelUpdateError as exc:
            self.error = exc
        except Exception:  # a bug: the command stays queued, judged when it runs
            logger.exception("model update: cannot judge a queued %s command", command.kind)
            self.acts = False
        finally:
            self.done.set()


class CommandInbox:
    """Routes model commands to the runner (thread-safe; :meth:`handle` never blocks).

    Args:
        limit: commands kept before the runner starts; more are refused ``busy``.
        reject: ``reject(reason, message, request_id)`` publishes a refusal.
        journal: records the commands kept during startup as queued.
        ledger: the answered requests; a command already answered that arrives during
            startup is answered again at once (``repeat(answer)``), not kept.
        repeat: publishes such an answer again.
    """

    def __init__(
        self,
        limit: int,
        reject: Reject,
        journal: RequestJournal | None = None,
        *,
        ledger: RequestLedger | None = None,
        repeat: Callable[[dict[str, Any]], None] | None = None,
    ):
        self._limit = max(1, limit)
        self._reject = reject
        self._journal = journal
        self._ledger = ledger
        self._repeat = repeat
        self._lock = threading.Lock()
        self._runner: UpdateRunner | None = None
        self._early: list[Held] = []
        self._taking = False
        self._taken: list[Held] = []
        self._judged: dict[Queued, bool] = {}  # acts() per queued command, this trial
        self._judging: dict[Queued, _Judging] = {}  # updates still being judged
        self._judges: list[threading.Thread] = []  # every judging thread still running

    def handle(self, command: str, payload: bytes, topic: str) -> None:
        """Keep (startup), take (a rollback during a waiting trial) or forward a command."""
        refuse = False
        answer = None
        with self._lock:
            runner = self._runner
            if runner is None:
                answer = self._answer_of(command, payload, topic)  # answered out of the lock
                if answer is None and self._kept_already(command, payload, topic):
                    logger.info(
                        "command %s on %.64r before startup: a repeat; dropped", command, topic
                    )
                    return  # as the runner drops a repeat of a queued command
                if answer is None and len(self._early) < self._limit:
                    logger.info("command %s on %.64r before startup; kept", command, topic)
                    self._early.append(Held(command, bytes(payload), topic))
                    self._note(peek_request_id(payload), kept=True)
                    return
                refuse = answer is None
            elif self._taking and self._take(runner, command, payload, topic):
                return
        if answer is not None and self._repeat is not None:
            # Not kept: a crash before the start must not answer it "interrupted".
            logger.info("command %s on %.64r before startup: answered already", command, topic)
            self._repeat(answer)
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

    def _answer_of(self, command: str, payload: bytes, topic: str) -> dict[str, Any] | None:
        """The answer the ledger holds for this very command, or None."""
        key = request_key(_kind(command, topic), peek_request_id(payload), payload)
        if key is None or self._ledger is None or self._repeat is None:
            return None
        return self._ledger.answer_of(key)

    def _kept_already(self, command: str, payload: bytes, topic: str) -> bool:
        """Whether the same command (kind, payload, request id) is kept already (lock held)."""
        key = request_key(_kind(command, topic), peek_request_id(payload), payload)
        return key is not None and any(
            request_key(_kind(h.command, h.topic), h.request_id, h.payload) == key
            for h in self._early
        )

    def _take(self, runner: UpdateRunner, command: str, payload: bytes, topic: str) -> bool:
        """Take a new rollback command for the waiting trial (lock held); False: not one."""
        kind = _kind(command, topic)
        if kind != ROLLBACK:
            return False
        try:
            parse_rollback_command(payload)
        except ModelUpdateError:
            return False  # the runner refuses it; it must not end the trial
        key = request_key(kind, peek_request_id(payload), payload)
        if key is not None:
            seen, _ = runner.ledger.admit(key)
            if seen is not Seen.NEW:
                return False  # a repeat: the runner drops it or answers it again
        logger.info("model update: rollback %s ends the trial waiting for frames", topic[:64])
        self._taken.append(Held(command, bytes(payload), topic, key))
        self._hold(key)  # until the service answers it
        return True

    def attach(self, runner: UpdateRunner) -> None:
        """The runner started: hand it the commands kept meanwhile, in order."""
        with self._lock:
            self._runner = runner
            early, self._early = self._early, []
            for held in early:  # never blocks: the runner only files them
                runner.handle(held.command, held.payload, held.topic)
                self._note(held.request_id, kept=False)  # the runner journals what it queues
        if early:
            logger.info("model update: %d command(s) kept during startup handed over", len(early))

    def _hold(self, key: RequestKey | None) -> None:
        """Record a rollback taken for the waiting trial in the journal (see ``hold``)."""
        if key is not None and self._journal is not None:
            self._journal.hold(key)

    def _note(self, request_id: str | None, *, kept: bool) -> None:
        """Record a command kept here (startup, a trial) in the journal, or drop that record."""
        if request_id is None or self._journal is None:
            return
        if kept:
            self._journal.queue(request_id)
        else:
            self._journal.unqueue(request_id)

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
        """What a waiting trial must give way to: a rollback (taken, or queued: then it is
        taken out of the queue), or a queued update that would change the model.

        Runs on the runner thread (the trial's); queued commands that do not parse are
        answered on the way.
        """
        with self._lock:
            runner = self._runner
        first = None if runner is None else self._first_acting(runner)
        with self._lock:
            if first is not None and first.kind == ROLLBACK:
                logger.info("model update: a queued rollback ends the trial waiting for frames")
                self._taken.append(Held(f"model/{ROLLBACK}", first.payload, "(queued)", first.key))
                self._hold(first.key)  # withdraw dropped it from the queued ones
            if self._taken:
                rid = self._taken[0].request_id
                return f"rollback request {rid} arrived" if rid else "a rollback arrived"
        if first is not None:
            rid = peek_request_id(first.payload)
            return f"update request {rid} is queued" if rid else "an update is queued"
        return None

    def _first_acting(self, runner: UpdateRunner) -> Queued | None:
        """The first queued command that would change the model (a rollback is taken out
        of the queue); the ones that do not parse are refused on the way."""
        for queued in runner.queued():
            if queued not in self._judged:  # judged once: the checks read the store
                try:
                    verdict = self._judge(runner, queued)
                except ModelUpdateError as exc:
                    if runner.withdraw(queued):
                        self._refuse(runner, queued, exc)
                    continue
                if verdict is None:
                    return None  # its manifest is still on its way: decided later
                self._judged[queued] = verdict
            if self._judged[queued] and (queued.kind != ROLLBACK or runner.withdraw(queued)):
                return queued
        return None

    def _judge(self, runner: UpdateRunner, queued: Queued) -> bool | None:
        """:func:`acts`, an update's on a thread of its own; None while that still runs."""
        if queued.kind == ROLLBACK:
            return acts(runner.installer, queued)
        judging = self._judging.get(queued)
        if judging is None:
            judging = self._judging[queued] = _Judging(runner.installer, queued)
            self._judges = [t for t in self._judges if t.is_alive()] + [judging.thread]
        if not judging.done.is_set():
            return None
        del self._judging[queued]
        if judging.error is not None:
            raise judging.error
        return bool(judging.acts)

    def _refuse(self, runner: UpdateRunner, queued: Queued, exc: ModelUpdateError) -> None:
        """Answer a queued command that cannot parse, now rather than after the trial."""
        if queued.key is not None:
            runner.ledger.forget(queued.key)  # sent again, it is refused again
        logger.warning("model update: queued %s command refused: %s", queued.kind, exc)
        self._reject(exc.reason, str(exc), peek_request_id(queued.payload))

    def close_trial(self) -> list[Held]:
        """The trial ended: stop taking rollbacks; the ones taken, for the caller to answer."""
        with self._lock:
            self._taking = False
            self._judged.clear()
            self._judging.clear()  # their threads end with their fetches (see join)
            taken, self._taken = self._taken, []
            return taken

    def join(self, timeout: float) -> bool:
        """Wait for the judging threads, after the stop cancelled their fetches.

        Returns:
            False when one still ran at ``timeout`` (it is a daemon thread: it cannot
            hold the process).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            judges, self._judges = self._judges, []
        for thread in judges:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = [t for t in judges if t.is_alive()]
        if late:
            logger.warning("model update: %d manifest fetches still running at stop", len(late))
        return not late

    def forward(self, held: Held) -> None:
        """Queue a taken rollback after all (the trial was confirmed: it runs as usual)."""
        with self._lock:
            runner = self._runner
        if runner is None:
            return
        if held.key is not None:
            runner.ledger.forget(held.key)  # admitted when taken; the runner admits it again
        runner.handle(held.command, held.payload, held.topic)
        self._note(held.request_id, kept=False)  # the runner journals what it queues
