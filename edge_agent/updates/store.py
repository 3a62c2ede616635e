"""The on-device model store: installed releases, the active pointer, crash recovery.

Layout under ``{state_dir}/models/``::

    <name>/<version>/            a complete, verified release (files + manifest.json
                                 envelope + .installed marker)
    active                       JSON pointer: {"format", "name", "version", "dir",
                                 "previous": {"name", "version", "dir"} | null, "switched_at"}
    .staging/<id>/               downloads in progress
    .trash/<id>/                 releases being deleted

Every state change is one atomic rename, made durable with fsync of the file and its
directory: a staging dir becomes a release dir in one rename, the pointer is replaced
in one rename, a release is deleted by renaming it into ``.trash`` first. So a crash at
any point leaves the old or the new release active, both complete; :meth:`recover`
sweeps the leftovers at startup.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from edge_agent.atomicfile import fsync_path
from edge_agent.errors import ModelUpdateError
from edge_agent.updates.manifest import (
    MANIFEST_FILE,
    Manifest,
    parse_version,
    validate_release_name,
)
from edge_agent.updates.pointer import (
    clear_trial,
    read_pointer,
    ref_dir,
    remove_pointer,
    write_pointer,
)
from edge_agent.updates.recovery import STAGING, RecoveryNote, recover_store
from edge_agent.updates.release import (
    INSTALLED_MARK,
    InstalledRelease,
    Staging,
    check_release_files,
    empty_trash,
    load_release,
    trash_release,
)

logger = logging.getLogger(__name__)

Hook = Callable[[str], None]
_V0 = parse_version(0)


class ModelStore:
    """Installed releases under ``{state_dir}/models``.

    Args:
        state_dir: the daemon's state directory.
        keep_versions: inactive releases kept for rollback (>= 1); older ones are
            pruned after each install. The active and the previous release are
            never pruned.
        hook: called with a checkpoint name at each step (fault-injection tests).
    """

    def __init__(
        self, state_dir: str | os.PathLike[str], *, keep_versions: int = 2, hook: Hook | None = None
    ):
        self.root = Path(state_dir) / "models"
        self.keep_versions = max(1, int(keep_versions))
        self._hook = hook or (lambda point: None)
        self._lock = threading.RLock()
        self.recovery: RecoveryNote | None = None  # set by recover()
        self.root.mkdir(parents=True, exist_ok=True)

    def release_dir(self, name: str, version: str) -> Path:
        """Directory of a release (names validated: no traversal even from a bad pointer).

        Raises:
            ModelUpdateError: ``corrupt`` for an invalid name or version.
        """
        validate_release_name(name, reason="corrupt")
        if str(parse_version(version, reason="corrupt")) != version:
            raise ModelUpdateError("corrupt", f"non-canonical version {version!r}")
        return self.root / name / version

    def load(self, path: Path, *, full: bool) -> InstalledRelease:
        """Read and check a release directory (see :func:`load_release`)."""
        return load_release(path, full=full)

    def installed(self) -> list[InstalledRelease]:
        """Every release whose files are present with the right sizes, newest install first."""
        out = []
        for name_dir in sorted(self.root.iterdir()):
            if name_dir.name.startswith(".") or not name_dir.is_dir():
                continue
            for version_dir in sorted(name_dir.iterdir()):
                try:
                    out.append(self.load(version_dir, full=False))
                except ModelUpdateError as exc:
                    logger.debug("model store: skipping %s: %s", version_dir, exc)
        out.sort(key=lambda r: (r.installed_at, r.manifest.version), reverse=True)
        return out

    def pointer(self) -> dict[str, Any] | None:
        """The active pointer object, or None (``corrupt`` ModelUpdateError if unreadable)."""
        return read_pointer(self.root)

    def active(self, *, verify: bool = False) -> InstalledRelease | None:
        """The active release, or None (no update installed: use the configured model).

        Args:
            verify: re-hash the files (``recover()`` already does this at startup).

        Raises:
            ModelUpdateError: ``corrupt``/``sha256_mismatch``... when the pointer or the
                release it names is broken (run :meth:`recover`).
        """
        with self._lock:
            ptr = self.pointer()
            if ptr is None:
                return None
            return load_release(self.release_dir(ptr["name"], str(ptr.get("version"))), full=verify)

    def find(self, manifest: Manifest) -> InstalledRelease | None:
        """An installed, fully verified release identical to ``manifest``, if any."""
        path = self.root / manifest.name / str(manifest.version)
        if not path.is_dir():
            return None
        try:
            release = self.load(path, full=True)
        except ModelUpdateError:
            return None
        return release if release.manifest.raw == manifest.raw else None

    def free_bytes(self) -> int:
        """Free bytes on the store's filesystem."""
        return shutil.disk_usage(self.root).free

    def begin(self, manifest: Manifest, envelope: bytes) -> Staging:
        """Create a staging directory holding the release's envelope.

        Raises:
            ModelUpdateError: ``io_error``.
        """
        sid = f"{manifest.name}-{manifest.version}-{uuid.uuid4().hex[:12]}"
        path = self.root / STAGING / sid
        try:
            path.mkdir(parents=True)
            (path / MANIFEST_FILE).write_bytes(envelope)
        except OSError as exc:
            raise ModelUpdateError("io_error", f"cannot create {path}: {exc}") from exc
        self._hook("staging_created")
        return Staging(sid, path, manifest)

    def abort(self, staging: Staging) -> None:
        """Delete a staging directory (best effort; recover() sweeps what is left)."""
        shutil.rmtree(staging.path, ignore_errors=True)

    def commit(self, staging: Staging, *, trial: bool = False) -> InstalledRelease:
        """Move a verified staging dir into place and make it active.

        Args:
            trial: activate it on trial (see :meth:`confirm`).

        Raises:
            ModelUpdateError: ``version_conflict`` (the same version with other
                contents is active or previous), ``truncated``..., ``io_error``.
        """
        manifest = staging.manifest
        with self._lock:
            check_release_files(staging.path, manifest, full=False)
            final = self.release_dir(manifest.name, str(manifest.version))
            try:
                (staging.path / INSTALLED_MARK).write_text(
                    json.dumps({"installed_at": time.time()})
                )
                for entry in staging.path.iterdir():
                    fsync_path(entry)
                fsync_path(staging.path)
                self._hook("staging_synced")
                if final.exists():
                    if final.name in self._protected_versions(final.parent.name):
                        raise ModelUpdateError(
                            "version_conflict", f"{manifest.label} is installed with other contents"
                        )
                    trash_release(self.root, final)
                final.parent.mkdir(exist_ok=True)
                fsync_path(self.root)
                os.rename(staging.path, final)
                self._hook("renamed")
                fsync_path(final.parent)
                fsync_path(staging.path.parent)
                self._hook("release_synced")
            except OSError as exc:
                raise ModelUpdateError(
                    "io_error", f"cannot install {manifest.label}: {exc}"
                ) from exc
            release = self.load(final, full=False)
            self.switch(release, previous=self._current(), trial=trial)
            self.prune()
            return release

    def activate(self, release: InstalledRelease, *, trial: bool = False) -> InstalledRelease:
        """Make an installed release active (re-install of an identical release), maybe on trial."""
        with self._lock:
            current = self._current()
            if current is not None and current.path == release.path:
                return release
            self.switch(release, previous=current, trial=trial)
            return release

    def confirm(self) -> bool:
        """End the active release's trial (it passed its health check); True if it had one.

        Until then, :meth:`recover` (after a crash) goes back to the previous release.
        Raises ModelUpdateError (``corrupt``, ``io_error``).
        """
        with self._lock:
            return clear_trial(self.root, self._hook)

    def previous(self) -> InstalledRelease | None:
        """The release a rollback would activate (fully verified), or None."""
        ptr = self.safe_pointer() or {}
        prev = ptr.get("previous")
        if not isinstance(prev, dict):
            return None
        try:
            return self.load(self.release_dir(prev["name"], str(prev["version"])), full=True)
        except (ModelUpdateError, KeyError) as exc:
            logger.error("model store: previous release unusable: %s", exc)
            return None

    def in_use(self, name: str, version: str) -> bool:
        """True when ``name@version`` is the active or the previous release."""
        return version in self._protected_versions(name)

    def is_active(self, release: InstalledRelease) -> bool:
        """True when the pointer names this release."""
        return ref_dir(self.safe_pointer()) == f"{release.name}/{release.version}"

    def rollback(
        self, *, allow_none: bool = False
    ) -> tuple[InstalledRelease | None, InstalledRelease | None]:
        """Re-activate the previous release and delete the one rolled back from.

        Args:
            allow_none: with no previous release, drop the pointer (the daemon goes
                back to its configured model) instead of raising.

        Returns:
            ``(now_active_or_None, rolled_back_from_or_None)``.

        Raises:
            ModelUpdateError: ``no_previous`` when there is nothing to go back to.
        """
        with self._lock:
            current = self._current()
            target = self.previous()
            if target is None:
                if not allow_none or current is None:
                    raise ModelUpdateError(
                        "no_previous", "no previous model version to roll back to"
                    )
                remove_pointer(self.root)
            else:
                skip = (target.path, current.path if current else None)
                rest = [r for r in self.installed() if r.path not in skip]
                self.switch(target, previous=rest[0] if rest else None)
            if current is not None:
                trash_release(self.root, current.path)
                empty_trash(self.root)
            return target, current

    def checkpoint(self, point: str) -> None:
        """Report a step to the fault-injection hook (no-op in production)."""
        self._hook(point)

    def recover(self) -> InstalledRelease | None:
        """Startup repair: sweep leftovers, verify the active release, or fall back.

        See :func:`edge_agent.updates.recovery.recover_store`; why it left the
        pointer's release, if it did, is kept in :attr:`recovery`.

        Returns:
            The active release after recovery (fully re-hashed), or None.
        """
        with self._lock:
            release, self.recovery = recover_store(self)
            return release

    def prune(self) -> list[str]:
        """Keep the active release and the ``keep_versions`` newest inactive ones.

        The previous release (the rollback target) is always kept.

        Returns:
            Labels of the deleted releases.
        """
        with self._lock:
            ptr = self.safe_pointer() or {}
            active, previous = ref_dir(ptr), ref_dir(ptr.get("previous"))
            inactive = [r for r in self.installed() if _rel(r, self.root) != active]
            pruned = []
            for release in inactive[self.keep_versions :]:
                if _rel(release, self.root) == previous:
                    continue
                try:
                    trash_release(self.root, release.path)
                except OSError as exc:  # the install itself succeeded: log and go on
                    logger.error("model store: cannot prune %s: %s", release.label, exc)
                    continue
                self._hook("pruned")
                logger.info("model store: pruned %s", release.label)
                pruned.append(release.label)
            empty_trash(self.root)
            return pruned

    def safe_pointer(self) -> dict[str, Any] | None:
        """The pointer, or None when missing or corrupt (logged)."""
        try:
            return self.pointer()
        except ModelUpdateError as exc:
            logger.error("model store: %s", exc)
            return None

    def _current(self) -> InstalledRelease | None:
        """The active release by size check, None when absent or broken."""
        try:
            return self.active(verify=False)
        except ModelUpdateError:
            return None

    def _protected_versions(self, name: str) -> set[str]:
        """Versions of ``name`` that are active or previous (never replaced in place)."""
        ptr = self.safe_pointer() or {}
        return {
            str(ref.get("version"))
            for ref in (ptr, ptr.get("previous"))
            if isinstance(ref, dict) and ref.get("name") == name
        }

    def switch(
        self, release: InstalledRelease, *, previous: InstalledRelease | None, trial: bool = False
    ) -> None:
        """Atomically point at ``release`` (``previous`` kept for rollback)."""
        if previous is not None and previous.path == release.path:
            previous = None
        write_pointer(self.root, release, previous, self._hook, trial=trial)
        logger.info(
            "model store: active model is now %s%s", release.label, " (on trial)" if trial else ""
        )


def _rel(release: InstalledRelease, root: Path) -> str:
    """``name/version`` of a release dir, as the pointer writes it."""
    return str(release.path.relative_to(root))
