"""The verify-and-install pipeline behind a model update command.

``UpdateInstaller.install`` runs, in order, and stops at the first failure with the
active model untouched: signature check with the trusted keys, the release's targets
(device type, device, group, model name: ``incompatible``), the release already active
(``active`` with reason ``already_active``, nothing else done), agent version, replay
check (the version must be newer than the active one and than every version of its
name confirmed on this box, unless forced), size limits and free space, download of
every file into a staging dir, size + sha256 + TFLite magic checks, the daemon's
validator (loads and invokes the model in a separate process), then the store's atomic
commit, then the daemon's hot swap (``swap``); a failed swap rolls the store back. The
release counts for the replay check only once confirmed (its trial passed). A rollback
reports ``installing`` while it switches, then ``rolled_back``. Each step goes to
``progress`` as a state dict ``{"state": an UpdateState value, "name", "version",
"percent", "reason", "message", "request_id", "from_version"}``; each request ends in
exactly one terminal state (active, failed, rolled_back).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.commands import (
    RollbackCommand,
    UpdateCommand,
    parse_rollback_command,
    parse_update_command,
    peek_request_id,
)
from edge_agent.updates.download import Downloader
from edge_agent.updates.history import note_confirmed
from edge_agent.updates.manifest import MAX_MANIFEST_BYTES, FileEntry, Manifest
from edge_agent.updates.policy import UpdateSettings, check_policy
from edge_agent.updates.release import InstalledRelease, check_release_files
from edge_agent.updates.signing import TrustedKeys, envelope_bytes, load_envelope, verify_envelope
from edge_agent.updates.states import UpdateJob, UpdateState
from edge_agent.updates.store import ModelStore
from edge_agent.updates.targets import check_targets

logger = logging.getLogger(__name__)

Validator = Callable[[Path, Manifest], None]
Swap = Callable[[InstalledRelease], None]
StateCallback = Callable[[dict], None]
FileProgress = Callable[[int, Optional[int]], None]
_SPACE_MARGIN = 4 * 1024 * 1024
__all__ = ["UpdateInstaller", "UpdateJob", "UpdateSettings"]


class UpdateInstaller:
    """Installs, activates and rolls back releases in a :class:`ModelStore`.

    Args:
        store: the model store.
        trusted_keys: keys whose signatures are accepted.
        settings: the update policy.
        validator: ``validator(release_dir, manifest)`` raises ModelUpdateError
            (e.g. ``incompatible``) when the model does not fit this device; the
            directory is a staging dir that moves afterwards.
        progress: receives every state dict (publish it retained); must not block.
        swap: ``swap(release)`` hot-swaps the running pipeline to a release and
            raises if it does not come up healthy (the pipeline must then still run
            the old model); the installer then rolls the store back.
        cancel: set it to abort downloads (daemon shutdown).
    """

    def __init__(
        self,
        store: ModelStore,
        trusted_keys: TrustedKeys,
        settings: UpdateSettings | None = None,
        validator: Validator | None = None,
        progress: StateCallback | None = None,
        *,
        swap: Swap | None = None,
        cancel: threading.Event | None = None,
    ):
        self.store = store
        self.keys = trusted_keys
        self.settings = settings or UpdateSettings()
        self.validator = validator
        self.swap = swap
        self.cancel = cancel or threading.Event()
        self._progress = progress
        self._busy = threading.Lock()
        self._downloader = Downloader(self.settings.download, cancel=self.cancel)

    def install(
        self, command: UpdateCommand | bytes | str, *, job: UpdateJob | None = None
    ) -> InstalledRelease:
        """Verify, install and activate the release a command names.

        Args:
            command: a parsed command or the raw MQTT payload.
            job: the request's record (its ``final`` holds the terminal state after).

        Returns:
            The now active release.

        Raises:
            ModelUpdateError: the update was rejected or failed (already reported
                as ``failed`` or ``rolled_back``); the previous model stays active.
        """
        job = job or UpdateJob()
        job.request_id = peek_request_id(command)
        with self._downloader.budget():  # updates.update_timeout, for all its fetches
            return self._guarded(job, lambda: self._install_command(job, command))

    def rollback(
        self,
        command: RollbackCommand | bytes | str | None = None,
        *,
        reason: str = "requested",
        job: UpdateJob | None = None,
    ) -> InstalledRelease | None:
        """Go back to the previous release and hot-swap to it.

        Returns:
            The now active release (None: the configured model).

        Raises:
            ModelUpdateError: ``no_previous``, ``bad_command``, ``swap_failed``...
        """
        job = job or UpdateJob()
        job.request_id = peek_request_id(command)

        def run() -> InstalledRelease | None:
            cmd = command
            if cmd is None or isinstance(cmd, (bytes, str)):
                cmd = parse_rollback_command(cmd or b"")
                job.request_id = cmd.request_id
            target = self.store.previous()
            if target is None:
                raise ModelUpdateError("no_previous", "no previous model version to roll back to")
            job.name, job.version = target.name, target.version
            # In progress (and journaled): a stop or crash from here on still ends it.
            self._report(job, UpdateState.INSTALLING, 100)
            if self.swap is not None:  # swap first: if it fails, nothing has changed
                try:
                    self.swap(target)
                except Exception as exc:  # a ModelUpdateError keeps its reason (interrupted...)
                    why = exc.reason if isinstance(exc, ModelUpdateError) else "swap_failed"
                    raise ModelUpdateError(why, f"{target.label}: {exc}") from exc
            now, old = self.store.rollback()
            self._report(
                job,
                UpdateState.ROLLED_BACK,
                100,
                reason=reason,
                from_version=old.label if old else None,
            )
            return now

        return self._guarded(job, run)

    def reject(self, reason: str, message: str, *, request_id: str | None = None) -> None:
        """Report a command refused before it reached the installer (e.g. queue full)."""
        self._report(
            UpdateJob(request_id), UpdateState.FAILED, None, reason=reason, message=message
        )

    def repeat(self, answer: dict[str, Any]) -> None:
        """Publish a request's final state again (the same command arrived again)."""
        self._publish(answer)

    def _guarded(self, job: UpdateJob, run: Callable[[], Any]) -> Any:
        """One request at a time; every failure reported once, as ModelUpdateError."""
        if not self._busy.acquire(blocking=False):
            err = ModelUpdateError("busy", "another model update is in progress")
            self._report(job, UpdateState.FAILED, None, reason=err.reason, message=str(err))
            raise err
        try:
            return run()
        except ModelUpdateError as exc:
            if job.final is None:  # a rolled-back swap has already given its answer
                logger.error("model update %s failed: %s", job.label, exc)
                self._report(job, UpdateState.FAILED, None, reason=exc.reason, message=str(exc))
            raise
        except Exception as exc:  # a bug or an OS error: still fail cleanly and say so
            logger.exception("model update %s: unexpected error", job.label)
            self._report(
                job, UpdateState.FAILED, None, reason="internal_error", message=repr(exc)[:300]
            )
            raise ModelUpdateError("internal_error", repr(exc)) from exc
        finally:
            self._busy.release()

    def _install_command(
        self, job: UpdateJob, command: UpdateCommand | bytes | str
    ) -> InstalledRelease:
        """Parse if needed, fetch the manifest if given by URL, then install."""
        if not isinstance(command, UpdateCommand):
            command = parse_update_command(command, self.settings.policy())
            job.request_id = command.request_id
        envelope = self.envelope_of(command)
        urls = command.url_for

        def fetch(entry: FileEntry, dest: Path, progress: FileProgress) -> None:
            self._downloader.download(
                urls(entry.name),
                dest,
                max_bytes=self.settings.max_file_bytes,
                expected_size=entry.size,
                progress=progress,
            )

        return self._install(job, envelope, command.force, fetch)

    def _install(
        self,
        job: UpdateJob,
        envelope: Mapping[str, Any],
        force: bool,
        fetch: Callable[[FileEntry, Path, FileProgress], None],
    ) -> InstalledRelease:
        """Verify, check targets and policy, download, validate, commit, swap."""
        manifest, existing = self.precheck(envelope, force, job)
        if existing is not None and self.store.is_active(existing):
            logger.info("model update %s: already active", manifest.label)
            self._report(job, UpdateState.ACTIVE, 100, reason="already_active")
            return existing
        if existing is not None:
            logger.info("model update %s: already installed; activating", manifest.label)
            self._report(job, UpdateState.INSTALLING, 100)
            trial = self.swap is not None
            return self._activate(job, self.store.activate(existing, trial=trial))
        if self.store.in_use(manifest.name, str(manifest.version)):
            raise ModelUpdateError(
                "version_conflict",
                f"{manifest.label} is installed with other contents; bump the version",
            )
        if self.store.free_bytes() < manifest.total_size + _SPACE_MARGIN:
            raise ModelUpdateError(
                "no_space", f"{manifest.label} needs {manifest.total_size} bytes; disk is full"
            )
        staging = self.store.begin(manifest, envelope_bytes(envelope))
        try:
            self._download_all(job, manifest, staging.path, fetch)
            self._report(job, UpdateState.VERIFYING, 100)
            check_release_files(staging.path, manifest, full=True)
            self.store.checkpoint("verified")
            if self.validator is not None:
                _call_validator(self.validator, staging.path, manifest)
            self._report(job, UpdateState.INSTALLING, 100)
            # On trial until its health check passes: a crash before, and startup goes back.
            release = self.store.commit(staging, trial=self.swap is not None)
        except BaseException:
            self.store.abort(staging)
            raise
        return self._activate(job, release)

    def envelope_of(self, command: UpdateCommand) -> Mapping[str, Any]:
        """The command's signed envelope; a ``manifest_url`` is fetched (ModelUpdateError)."""
        if command.envelope is not None:
            return command.envelope
        url = command.manifest_url or ""
        return load_envelope(self._downloader.fetch(url, max_bytes=MAX_MANIFEST_BYTES))

    def precheck(
        self, envelope: Mapping[str, Any], force: bool, job: UpdateJob | None = None
    ) -> tuple[Manifest, InstalledRelease | None]:
        """The checks before any download (signature, targets; agent version, replay and
        sizes unless the release is the active one): its manifest and installed copy
        (None: not installed). Raises ModelUpdateError: why the install would fail."""
        manifest = verify_envelope(envelope, self.keys, allow_unsigned=self.settings.allow_unsigned)
        if job is not None:
            job.name, job.version = manifest.name, str(manifest.version)
        active, s = self._active(), self.settings
        running = active.name if active is not None else (s.model_name or None)
        check_targets(manifest, s.device, running, allow_model_change=s.allow_model_change)
        existing = self.store.find(manifest)
        if existing is None or not self.store.is_active(existing):
            # After the active check: a repeated command is not an old release.
            check_policy(manifest, self.settings, active, self.store.root, force=force)
        return manifest, existing

    def _active(self) -> InstalledRelease | None:
        """The active release (None when unreadable: the checks then assume none)."""
        try:
            return self.store.active()
        except ModelUpdateError as exc:
            logger.warning("model update: active release unreadable (%s)", exc)
            return None

    def _download_all(
        self,
        job: UpdateJob,
        manifest: Manifest,
        dest: Path,
        fetch: Callable[[FileEntry, Path, FileProgress], None],
    ) -> None:
        """Fetch every file, reporting overall percent (throttled to whole percents)."""
        total = max(1, manifest.total_size)
        done_before = 0
        last = {"percent": -1, "at": 0.0}
        interval = self.settings.download.progress_interval

        def progress(done: int, _total: int | None) -> None:
            percent = min(99, (done_before + done) * 100 // total)
            now = time.monotonic()
            if percent > last["percent"] and now - last["at"] >= interval:
                last.update(percent=percent, at=now)
                self._report(job, UpdateState.DOWNLOADING, percent)

        self._report(job, UpdateState.DOWNLOADING, 0)
        last.update(percent=0, at=time.monotonic())
        for entry in manifest.files:
            fetch(entry, dest / entry.name, progress)
            done_before += entry.size
            self.store.checkpoint(f"downloaded:{entry.name}")

    def _activate(self, job: UpdateJob, release: InstalledRelease) -> InstalledRelease:
        """Hot-swap to a committed release; a failed swap rolls the store back."""
        if self.swap is not None:
            try:
                with self._downloader.unbudgeted():  # a trial may outlast update_timeout
                    self.swap(release)
            except Exception as exc:
                reason = exc.reason if isinstance(exc, ModelUpdateError) else "swap_failed"
                logger.error(
                    "model update %s: hot swap failed (%s); rolling back", release.label, exc
                )
                now, _ = self.store.rollback(allow_none=True)
                job.name, job.version = (now.name, now.version) if now else (None, None)
                self._report(
                    job, UpdateState.ROLLED_BACK, None, reason=reason, message=str(exc)[:300],
                    from_version=release.label,
                )  # fmt: skip
                raise ModelUpdateError(reason, f"{release.label} failed to start: {exc}") from exc
            try:
                self.store.confirm()
            except ModelUpdateError as exc:  # it runs; a restart would just undo it
                logger.error("model update %s: cannot confirm: %s", release.label, exc)
                return self._active_now(job, release)
        note_confirmed(self.store.root, release.manifest)
        return self._active_now(job, release)

    def _active_now(self, job: UpdateJob, release: InstalledRelease) -> InstalledRelease:
        """Report a release active (the request's final state)."""
        self._report(job, UpdateState.ACTIVE, 100)
        logger.info("model update: %s is active", release.label)
        return release

    def _report(
        self,
        job: UpdateJob,
        state: UpdateState,
        percent: int | None,
        *,
        reason: str | None = None,
        message: str | None = None,
        from_version: str | None = None,
    ) -> None:
        """Send one state of a request to the progress callback (a terminal one ends it)."""
        doc: dict[str, Any] = {
            "state": state.value,
            "name": job.name,
            "version": job.version,
            "percent": percent,
            "reason": reason,
            # Messages can quote what a sender sent: bounded, as they are retained.
            "message": None if message is None else message[:500],
            "request_id": job.request_id,
        }
        if from_version is not None:
            doc["from_version"] = from_version
        if state.terminal:
            job.final = doc
            try:
                if job.on_final is not None:
                    job.on_final(dict(doc))
            except Exception:  # recording the answer must not stop it being published
                logger.exception("model update: cannot record the answer to %s", job.request_id)
        self._publish(doc)

    def _publish(self, doc: dict[str, Any]) -> None:
        """Hand a state to the progress callback; its errors are logged only."""
        if self._progress is None:
            return
        try:
            self._progress(dict(doc))
        except Exception:
            logger.exception("model update: progress callback failed (state %s)", doc["state"])


def _call_validator(validator: Validator, path: Path, manifest: Manifest) -> None:
    """Run the daemon's validator; anything but ModelUpdateError means incompatible."""
    try:
        validator(path, manifest)
    except ModelUpdateError:
        raise
    except Exception as exc:
        raise ModelUpdateError("incompatible", f"{manifest.label}: {exc}") from exc
