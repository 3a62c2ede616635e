"""The device side of updates: a worker thread between MQTT commands and the installer.

MQTT callbacks must not block, so the daemon hands each command message to
:meth:`UpdateWorker.submit` (it only enqueues); the worker thread parses and runs
installs and rollbacks one at a time and publishes every state through
``publish_state`` (the daemon publishes it retained on ``{prefix}/{device_id}/model``).
Optionally the worker also polls a manifest URL (ETag/If-Modified-Since) and installs
a newer release when one appears: pull-based updates without an operator push.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.commands import ROLLBACK, UPDATE, UpdateCommand, command_kind
from edge_agent.updates.download import Downloader
from edge_agent.updates.installer import UpdateInstaller
from edge_agent.updates.manifest import MAX_MANIFEST_BYTES, parse_manifest
from edge_agent.updates.signing import load_envelope, parse_envelope
from edge_agent.updates.urls import redact_url

logger = logging.getLogger(__name__)

_QUEUE_SIZE = 4


def current_state(installer: UpdateInstaller) -> dict:
    """The state to publish at startup: the active release, or the configured model."""
    try:
        release = installer.store.active()
    except ModelUpdateError as exc:
        logger.error("model update: active release unreadable at startup: %s", exc)
        release = None
    return {
        "state": "active",
        "name": release.name if release else None,
        "version": release.version if release else None,
        "percent": 100,
        "reason": None if release else "configured",
        "message": None,
        "request_id": None,
    }


class UpdateWorker:
    """Runs update/rollback commands (and optional polling) on its own thread.

    Args:
        installer: the installer (its ``progress`` should publish the states).
        poll_url: manifest URL to poll, or None.
        poll_interval: seconds between polls (<= 0: once, at startup).
    """

    def __init__(
        self,
        installer: UpdateInstaller,
        *,
        poll_url: str | None = None,
        poll_interval: float = 3600.0,
    ):
        self.installer = installer
        self.poll_url = poll_url
        self.poll_interval = poll_interval
        self._jobs: queue.Queue[tuple[str, bytes]] = queue.Queue(_QUEUE_SIZE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._etag: str | None = None
        self._last_modified: str | None = None
        self._downloader = Downloader(installer.settings.download, cancel=installer.cancel)

    def start(self) -> UpdateWorker:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name="model-updates", daemon=True)
        self._thread.start()
        return self

    def submit(self, topic: str, payload: bytes) -> None:
        """Queue a command received on a model command topic (never blocks, never raises)."""
        self.handle("", payload, topic)

    def handle(self, command: str, payload: bytes, topic: str = "") -> None:
        """Daemon hook: queue ``model/update`` or ``model/rollback`` (never blocks or raises).

        Any other command is rejected at once: ``failed`` with ``bad_command``.

        Args:
            command: the part of the topic after ``/cmd/`` (or "" to read ``topic``).
            payload: the raw MQTT payload.
            topic: the full topic, for logs.
        """
        kind = command_kind(f"x/cmd/{command}" if command else topic)
        if kind is None:
            shown = (command or topic)[:64]  # topic text is the sender's: keep it short
            logger.warning("model update: ignoring unknown command %r", shown)
            # Say so on the state topic too: an operator's typo must not look like a
            # command that is still queued.
            self.installer.reject(
                "bad_command", f"unknown command {shown!r}; expected model/update or model/rollback"
            )
            return
        try:
            self._jobs.put_nowait((kind, bytes(payload)))
        except queue.Full:
            logger.error(
                "model update: %d commands pending; dropping one from %s", _QUEUE_SIZE, topic
            )
            self.installer.reject("busy", "too many model commands pending")

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel downloads, stop the thread and wait for it (with a timeout)."""
        self._stop.set()
        self.installer.cancel.set()
        try:
            self._jobs.put_nowait(("", b""))  # wake the worker now rather than in 1 s
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("model update: worker did not stop within %.0fs", timeout)

    def _run(self) -> None:
        """Commands as they come; a poll whenever the interval elapses."""
        next_poll = time.monotonic() if self.poll_url else None
        while not self._stop.is_set():
            left = 1.0 if next_poll is None else next_poll - time.monotonic()
            try:
                kind, payload = self._jobs.get(timeout=max(0.0, min(1.0, left)))
            except queue.Empty:
                if next_poll is not None and time.monotonic() >= next_poll:
                    self._poll()
                    # poll_interval <= 0: check once at startup only.
                    more = self.poll_interval > 0
                    next_poll = time.monotonic() + self.poll_interval if more else None
                continue
            self._handle(kind, payload)

    def _handle(self, kind: str, payload: bytes) -> None:
        """Run one command; failures are already reported as states by the installer."""
        try:
            if kind == UPDATE:
                self.installer.install(payload)
            elif kind == ROLLBACK:
                self.installer.rollback(payload)
        except ModelUpdateError as exc:
            logger.warning("model update: %s command failed: %s", kind, exc)
        except Exception:  # the installer wraps errors; this is a last line of defence
            logger.exception("model update: %s command crashed", kind)

    def _poll(self) -> None:
        """Fetch the manifest URL if changed; install when it names a newer release."""
        url = self.poll_url or ""
        shown = redact_url(url)
        try:
            fetched = self._downloader.fetch_if_changed(
                url, self._etag, self._last_modified, max_bytes=MAX_MANIFEST_BYTES
            )
            if not fetched.changed:
                logger.debug("model update: %s unchanged", shown)
                return
            envelope = load_envelope(fetched.body or b"")
            manifest = parse_manifest(parse_envelope(envelope).manifest)
        except ModelUpdateError as exc:
            logger.warning("model update: polling %s failed: %s", shown, exc)
            return
        self._etag, self._last_modified = fetched.etag, fetched.last_modified
        try:
            active = self.installer.store.active()
        except ModelUpdateError:
            active = None
        same = active is not None and active.name == manifest.name
        if same and manifest.version <= active.manifest.version:
            logger.debug("model update: %s offers %s; not newer", shown, manifest.label)
            return
        logger.info("model update: %s offers %s; installing", shown, manifest.label)
        self._handle_command(UpdateCommand(envelope=envelope, manifest_url=url))

    def _handle_command(self, command: UpdateCommand) -> None:
        """Install a parsed command (the polling path)."""
        try:
            self.installer.install(command)
        except ModelUpdateError as exc:
            logger.warning("model update: polled install failed: %s", exc)
