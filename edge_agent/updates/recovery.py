"""Startup recovery of the model store, and what it tells the model topic.

A box killed at any point of an update, or whose active release lost a file, comes back
on a complete release: :func:`recover_store` sweeps partial downloads, undoes a switch
still on trial, and falls back to the newest release that verifies (or to the configured
model). Leaving the release the pointer named is not silent: the returned
:class:`RecoveryNote` is published with the startup state (reason ``trial_abandoned``
or ``fallback``, the release left, and why).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from typing import TYPE_CHECKING, Any, NamedTuple

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.history import note_confirmed
from edge_agent.updates.pointer import POINTER, remove_pointer, remove_temp_pointers
from edge_agent.updates.release import TRASH, InstalledRelease, empty_trash, trash_release
from edge_agent.updates.versions import parse_version

if TYPE_CHECKING:
    from edge_agent.updates.store import ModelStore

logger = logging.getLogger(__name__)

STAGING = ".staging"
_V0 = parse_version(0)


class RecoveryNote(NamedTuple):
    """Why startup recovery left the release the pointer named (reported on the model topic).

    ``reason``: ``trial_abandoned`` (it was on trial when the agent stopped) or
    ``fallback`` (its files were missing or corrupt).
    """

    reason: str
    message: str
    from_label: str


def _label(ref: dict[str, Any]) -> str:
    """``name@version`` of a pointer reference (for reports; never raises)."""
    return f"{ref.get('name')}@{ref.get('version')}"


def recover_store(store: ModelStore) -> tuple[InstalledRelease | None, RecoveryNote | None]:
    """Startup repair: sweep leftovers, verify the active release, or fall back.

    Deletes staging dirs, trash and pointer temp files. If the pointer is
    missing, corrupt, or names an incomplete/corrupt release, activates the
    newest complete release that verifies (releases that fail are deleted).
    The caller holds the store's lock.

    Returns:
        The active release after recovery (fully re-hashed), or None; and why it left
        the release the pointer named, or None when it did not.
    """
    note = None
    for leftover in (store.root / STAGING, store.root / TRASH):
        shutil.rmtree(leftover, ignore_errors=True)
    remove_temp_pointers(store.root)
    ptr = store.safe_pointer()
    if ptr is not None and ptr.get("trial"):
        # The agent stopped before the release proved healthy (it may be what
        # crashed it): undo the switch, as the health check would have.
        why = f"{_label(ptr)} was on trial when the agent stopped"
        logger.error("model store: %s; going back", why)
        note = RecoveryNote("trial_abandoned", why, _label(ptr))
        try:
            store.rollback(allow_none=True)
        except ModelUpdateError as exc:  # the checks below still repair the store
            logger.error("model store: cannot undo the trial: %s", exc)
        ptr = store.safe_pointer()
    hint = ptr.get("name") if ptr else None
    if ptr is not None:
        try:
            release = store.active(verify=True)
            _check_previous(store, release, ptr)
            if not ptr.get("trial"):
                # Confirmed: a power cut between the confirm and the version record must
                # not leave it out of replay protection (a no-op when it is recorded).
                note_confirmed(store.root, release.manifest)
            return release, note
        except ModelUpdateError as exc:
            logger.error("model store: active release unusable: %s", exc)
            why = f"{_label(ptr)} unusable: {exc}"
            note = RecoveryNote("fallback", why, _label(ptr))
    elif (store.root / POINTER).exists():
        note = RecoveryNote("fallback", "active pointer unreadable", "")
    candidates = store.installed()
    # Prefer the pointer's model (newest version first), then the newest install.
    candidates.sort(
        key=lambda r: (
            r.name == hint,
            r.manifest.version if r.name == hint else _V0,
            r.installed_at,
        ),
        reverse=True,
    )
    for i, release in enumerate(candidates):
        try:
            release = store.load(release.path, full=True)
        except ModelUpdateError as exc:
            logger.error("model store: deleting corrupt %s: %s", release.label, exc)
            with contextlib.suppress(OSError):
                trash_release(store.root, release.path)
            continue
        rest = candidates[i + 1 :]
        store.switch(release, previous=rest[0] if rest else None)
        logger.warning("model store: fell back to %s", release.label)
        note = _with_outcome(note, f"fell back to {release.label}")
        empty_trash(store.root)
        return release, note
    if ptr is not None or (store.root / POINTER).exists():
        remove_pointer(store.root)
        note = _with_outcome(note, "no usable release left: running the configured model")
    empty_trash(store.root)
    return None, note


def _check_previous(store: ModelStore, release: InstalledRelease, ptr: dict[str, Any]) -> None:
    """Repair a pointer whose previous release disappeared."""
    prev = ptr.get("previous")
    if prev is None:
        return
    try:
        store.load(store.release_dir(prev["name"], str(prev["version"])), full=False)
    except (ModelUpdateError, KeyError, TypeError) as exc:
        logger.warning("model store: previous release unusable (%s); clearing it", exc)
        store.switch(release, previous=None)


def _with_outcome(note: RecoveryNote | None, outcome: str) -> RecoveryNote | None:
    """Add where a fallback ended to the note of why it left the pointer's release."""
    if note is None or note.reason != "fallback":
        return note
    return note._replace(message=f"{note.message}; {outcome}"[:500])
