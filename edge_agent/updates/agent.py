"""The device side of updates: a thread between MQTT commands and the installer.

MQTT callbacks must not block, so the daemon hands each command message to
:meth:`UpdateRunner.handle`, which only files it: into a bounded queue (depth
``updates.queue_depth``), or, when that is full, straight to a ``busy`` refusal under
the command's request id. The runner thread parses and runs installs and rollbacks one
at a time and publishes every state through the installer's ``progress`` (the daemon
publishes it retained on ``{prefix}/{device_id}/model``).

Commands are idempotent by request id (see ``requests.py``): a repeat of a queued or
running command is dropped, a repeat of an answered one gets its final state again.
Every command with a request id thus gets exactly one final state under that id.

A stop or a crash does not lose a command: with a :class:`RequestJournal`, each queued
command with a request id is recorded before it is queued. At a stop, the commands still
queued are answered ``failed``/``interrupted`` (they never ran; send them again); after a
crash, :meth:`UpdateRunner.start` answers them so. An answer given because the daemon
was stopping is not remembered as the request's answer: the same command sent again runs.

Optionally the runner also polls a manifest URL (ETag/If-Modified-Since) and installs
a newer release when one appears: pull-based updates without an operator push. The
validators of a manifest are kept only once its release was handled for good
(installed, already active, not newer, or refused for a reason that a retry cannot
change); after a transient failure (network, HTTP, timeout, full disk...) the next poll
fetches it again, after a capped exponential backoff from ``poll_interval``. A command
queued while the manifest is fetched cuts that fetch short: commands go first. A polled
release refused for good is remembered across restarts (``polled.py``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import NamedTuple

from edge_agent.backoff import Backoff
from edge_agent.errors import ModelUpdateError
from edge_agent.redaction import mask_credentials
from edge_agent.updates.commands import (
    ROLLBACK,
    UPDATE,
    command_kind,
    peek_request_id,
)
from edge_agent.updates.download import Downloader
from edge_agent.updates.installer import UpdateInstaller
from edge_agent.updates.journal import INTERRUPTED, RequestJournal
from edge_agent.updates.manifest import MAX_MANIFEST_BYTES
from edge_agent.updates.polled import count_abandoned, handle_polled
from edge_agent.updates.requests import (
    LEDGER_FILE,
    RequestKey,
    RequestLedger,
    Seen,
    request_key,
)
from edge_agent.updates.states import UpdateJob, UpdateState

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_DEPTH = 8
# Polled releases that failed for one of these reasons are fetched again at the next
# poll: a retry may succeed. Any other outcome is final for that manifest.
RETRY_POLL = frozenset(
    {"http_error", "timeout", "tls_error", "truncated", "sha256_mismatch", "io_error",
     "no_space", "busy", "cancelled", INTERRUPTED}
)  # fmt: skip
POLL_BACKOFF_MAX = 6 * 3600.0  # the longest wait between retries of a failing poll
_UNRAN = "the daemon {} before this request ran; send it again"


class Queued(NamedTuple):
    """A command waiting for the runner thread (kind "" wakes it to stop)."""

    kind: str
    payload: bytes
    key: RequestKey | None


def current_state(installer: UpdateInstaller) -> dict:
    """The state to publish at startup: the active release, or the configured model.

    When startup recovery could not use the release the pointer named, the state says
    so (reason ``fallback`` or ``trial_abandoned``, with the release it left).
    """
    try:
        release = installer.store.active()
    except ModelUpdateError as exc:
        logger.error("model update: active release unreadable at startup: %s", exc)
        release = None
    note = installer.store.recovery
    state = {
        "state": UpdateState.ACTIVE.value,
        "name": release.name if release else None,
        "version": release.version if release else None,
        "percent": 100,
        "reason": None if release else "configured",
        "message": None,
        "request_id": None,
    }
    if note is not None:
        state.update(reason=note.reason, message=note.message, from_version=note.from_label or None)
    return state


class UpdateRunner:
    """Runs update/rollback commands (and optional polling) on its own thread.

    Args:
        installer: the installer (its ``progress`` should publish the states).
        poll_url: manifest URL to poll, or None.
        poll_interval: seconds between polls (<= 0: once, at startup).
        queue_depth: commands waiting behind the running one; more are refused ``busy``.
        ledger: answered requests (default: persisted beside the model store).
        journal: records queued and running requests on disk, so that a crash still
            answers them at the next start (None: a stop answers them, a crash cannot).
    """

    def __init__(
        self,
        installer: UpdateInstaller,
        *,
        poll_url: str | None = None,
        poll_interval: float = 3600.0,
        queue_depth: int = DEFAULT_QUEUE_DEPTH,
        ledger: RequestLedger | None = None,
        journal: RequestJournal | None = None,
    ):
        self.installer = installer
        self.poll_url = poll_url
        self.poll_interval = poll_interval
        self.queue_depth = max(1, queue_depth)
        self.ledger = ledger or RequestLedger(installer.store.root / LEDGER_FILE)
        self._jobs: queue.Queue[Queued] = queue.Queue(self.queue_depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._etag: str | None = None
        self._last_modified: str | None = None
        self._poll_cancel = threading.Event()  # a stop, or a command queued: it goes first
        self._downloader = Downloader(installer.settings.download, cancel=self._poll_cancel)
        self.journal = journal
        self._intake = threading.Lock()  # queueing vs. the final drain at a stop
        self._closed = False
        first = poll_interval if poll_interval > 0 else 60.0
        # Up to 16 intervals, capped at POLL_BACKOFF_MAX unless one interval is longer.
        self._poll_backoff = Backoff(
            first, min(16 * first, max(POLL_BACKOFF_MAX, first)), jitter=0.2
        )

    def start(self) -> UpdateRunner:
        """Answer the requests a crash left queued, then start the runner thread."""
        if self.journal is not None:
            for rid in self.journal.take_queued():
                logger.warning("model update: request %s was queued when the daemon stopped", rid)
                self.installer.reject(INTERRUPTED, _UNRAN.format("stopped"), request_id=rid)
                self.journal.unqueue(rid)
        if self.poll_url:
            count_abandoned(self.installer.store)  # a polled release the daemon did not survive
        self._thread = threading.Thread(target=self._run, name="model-updates", daemon=True)
        self._thread.start()
        return self

    def queued(self) -> list[Queued]:
        """The commands queued behind the running one, in order (a snapshot)."""
        with self._jobs.mutex:
            return [c for c in self._jobs.queue if c.kind]

    def withdraw(self, command: Queued) -> bool:
        """Take a queued command out of the queue (the caller answers it); False: gone."""
        with self._intake, self._jobs.mutex:
            try:
                self._jobs.queue.remove(command)
            except ValueError:
                return False
            self._jobs.not_full.notify()
        if command.key is not None and self.journal is not None:
            self.journal.unqueue(command.key.request_id)
        return True

    def handle(self, command: str, payload: bytes, topic: str = "") -> None:
        """Daemon hook: queue ``model/update`` or ``model/rollback`` (never blocks or raises).

        Any other command is rejected at once: ``failed`` with ``bad_command``. A full
        queue refuses the command as ``busy``, under its request id.

        Args:
            command: the part of the topic after ``/cmd/`` (or "" to read ``topic``).
            payload: the raw MQTT payload.
            topic: the full topic, for logs.
        """
        try:
            self._file(command, bytes(payload), topic)
        except Exception:  # an MQTT callback must never raise
            logger.exception("model update: cannot take a command from %.64r", topic)

    def _file(self, command: str, payload: bytes, topic: str) -> None:
        """Queue, drop (a repeat in progress), answer again, or refuse one command."""
        kind = command_kind(f"x/cmd/{command}" if command else topic)
        rid = peek_request_id(payload)
        if kind is None:
            shown = (command or topic)[:64]  # topic text is the sender's: keep it short
            logger.warning("model update: ignoring unknown command %r", shown)
            # Say so on the state topic too: an operator's typo must not look like a
            # command that is still queued.
            self.installer.reject(
                "bad_command",
                f"unknown command {shown!r}; expected model/update or model/rollback",
                request_id=rid,
            )
            return
        key = request_key(kind, rid, payload)
        if key is not None:
            seen, answer = self.ledger.admit(key)
            if seen is Seen.IN_PROGRESS:
                logger.info("model update: request %s repeated while in progress; dropped", rid)
                return
            if answer is not None:
                logger.info("model update: request %s already answered; answering again", rid)
                self.installer.repeat(answer)
                return
        with self._intake:
            if self._closed:
                refusal = (INTERRUPTED, _UNRAN.format("is stopping"))
            else:
                refusal = self._enqueue(Queued(kind, payload, key), rid)
        if refusal is None:
            return
        if key is not None:
            self.ledger.forget(key)
        logger.error("model update: refusing request %s from %.64r: %s", rid, topic, refusal[1])
        self.installer.reject(*refusal, request_id=rid)

    def _enqueue(self, command: Queued, rid: str | None) -> tuple[str, str] | None:
        """Journal and queue a command (intake lock held); the refusal when the queue is full."""
        if rid is not None and self.journal is not None:
            self.journal.queue(rid)  # first: the runner may take it the moment it is queued
        try:
            self._jobs.put_nowait(command)
        except queue.Full:
            if rid is not None and self.journal is not None:
                self.journal.unqueue(rid)
            return "busy", f"{self.queue_depth} model commands already pending; send it again later"
        self._poll_cancel.set()
        return None

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel downloads, stop the thread and wait for it (with a timeout)."""
        self._stop.set()
        self.installer.cancel.set()
        try:
            self._jobs.put_nowait(Queued("", b"", None))  # wake the thread now, not in 1 s
        except queue.Full:
            pass
        self._poll_cancel.set()  # after the put: a poll cleared after it sees the queue
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("model update: runner did not stop within %.0fs", timeout)

    def _run(self) -> None:
        """Commands as they come; a poll whenever its delay elapses; at a stop, the rest
        of the queue is answered."""
        next_poll = time.monotonic() if self.poll_url else None
        while not self._stop.is_set():
            left = 1.0 if next_poll is None else next_poll - time.monotonic()
            self._poll_cancel.clear()  # set once a command is in the queue: a poll gives way
            try:
                command = self._jobs.get(timeout=max(0.0, min(1.0, left)))
            except queue.Empty:
                if next_poll is not None and time.monotonic() >= next_poll:
                    delay = self._poll_delay(self._poll())
                    next_poll = None if delay is None else time.monotonic() + delay
                continue
            if self._stop.is_set():
                self._unran(command)
                break
            self._handle(command)
        self._drain()

    def _poll_delay(self, settled: bool) -> float | None:
        """Seconds to the next poll: the interval once settled, else the backoff's delay.

        None: no more polls (``poll_interval`` <= 0 checks once, retried until settled).
        """
        if not settled:
            delay = self._poll_backoff.next()
            logger.info("model update: polling again in %.0fs", delay)
            return delay
        self._poll_backoff.reset()
        return self.poll_interval if self.poll_interval > 0 else None

    def _drain(self) -> None:
        """Stopping: answer every command still queued, and take no more."""
        with self._intake:
            self._closed = True
        while True:
            try:
                command = self._jobs.get_nowait()
            except queue.Empty:
                return
            self._unran(command)

    def _unran(self, command: Queued) -> None:
        """Answer a queued command the stop kept from running (``failed``/``interrupted``)."""
        if not command.kind:
            return  # the stop's wake-up
        if command.key is None:
            logger.warning(
                "model update: a %s command without request id was dropped", command.kind
            )
            return
        rid = command.key.request_id
        self.ledger.forget(command.key)  # not an answer to remember: sent again, it runs
        self.installer.reject(INTERRUPTED, _UNRAN.format("is stopping"), request_id=rid)
        if self.journal is not None:
            self.journal.unqueue(rid)

    def _handle(self, command: Queued) -> None:
        """Run one command; failures are already reported as states by the installer."""
        key = command.key
        if self.journal is not None:
            rid, digest = (None, None) if key is None else key
            self.journal.begin(rid, command.kind, digest)
        # The answer is recorded before it is published: a repeat sent the moment the
        # answer is seen must find it answered, not still in progress.
        job = UpdateJob(on_final=None if key is None else lambda doc: self._answered(key, doc))
        try:
            if command.kind == UPDATE:
                self.installer.install(command.payload, job=job)
            elif command.kind == ROLLBACK:
                self.installer.rollback(command.payload, job=job)
        except ModelUpdateError as exc:
            logger.warning("model update: %s command failed: %s", command.kind, exc)
        except Exception:  # the installer wraps errors; this is a last line of defence
            logger.exception("model update: %s command crashed", command.kind)
        finally:
            if key is not None and job.final is None:  # no answer (a bug): never stuck
                self.ledger.forget(key)

    def _answered(self, key: RequestKey, doc: dict) -> None:
        """Remember a request's answer, unless a stop cut the request short.

        Such an answer (whatever its reason) is not what the command would get: sent
        again, it must run, not be answered the same.
        """
        if self._stop.is_set() and doc.get("state") != UpdateState.ACTIVE.value:
            self.ledger.forget(key)
        else:
            self.ledger.answer(key, doc)

    def _poll(self) -> bool:
        """Fetch the manifest URL if changed; install when it names a newer release.

        Returns:
            True when the manifest was handled for good (its validators are kept, so
            the next poll asks only whether it changed); False when a retry may succeed.
        """
        url = self.poll_url or ""
        shown = mask_credentials(url)
        try:
            fetched = self._downloader.fetch_if_changed(
                url, self._etag, self._last_modified, max_bytes=MAX_MANIFEST_BYTES
            )
        except ModelUpdateError as exc:
            logger.warning("model update: polling %s failed: %s", shown, exc)
            return exc.reason not in RETRY_POLL
        if not fetched.changed:
            logger.debug("model update: %s unchanged", shown)
            return True
        outcome = handle_polled(self.installer, fetched.body or b"", url)
        if outcome in RETRY_POLL:
            logger.warning("model update: %s failed (%s); it will be fetched again", shown, outcome)
            return False
        self._etag, self._last_modified = fetched.etag, fetched.last_modified
        return True
