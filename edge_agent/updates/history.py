"""Replay protection across release names: the highest version ever installed, per name.

Comparing an update only with the *active* release lets an old signed release of another
name come back (install ``doorcam@1``, then replay ``blobs@2`` over a box that once ran
``blobs@3``). ``{state_dir}/models/versions.json`` remembers, per release name, the
highest version confirmed on this box (active, and its trial passed); an update must be
newer than that unless forced. Only confirmed releases count: a release whose trial was
cut short by a stop or a crash, or failed its health check, was rolled back and never
served for good, and retrying that very update must still work (it is checked again).
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.manifest import Manifest
from edge_agent.updates.release import read_json_record, write_json_atomic
from edge_agent.updates.versions import Version, parse_version

logger = logging.getLogger(__name__)

HISTORY = "versions.json"


def _read(root: Path) -> tuple[dict[str, str], bool]:
    """The recorded highest versions, and False when the record is damaged (logged):
    then the highest of each name among the releases still on disk, the best left to
    go on (empty when the record is missing)."""
    data = read_json_record(root / HISTORY, dict, "using the releases on disk")
    if data is None:
        damaged = (root / HISTORY).exists()
        return (_on_disk(root) if damaged else {}), not damaged
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}, True


def _on_disk(root: Path) -> dict[str, str]:
    """The highest version of each name among the release dirs ``<name>/<version>``."""
    highest: dict[str, Version] = {}
    try:
        for path in root.glob("*/*"):
            if path.parent.name.startswith(".") or not path.is_dir():
                continue  # staging, trash
            try:
                version = parse_version(path.name, reason="corrupt")
            except ModelUpdateError:
                continue
            if path.parent.name not in highest or version > highest[path.parent.name]:
                highest[path.parent.name] = version
    except OSError as exc:
        logger.warning("model store: cannot list the releases in %s: %s", root, exc)
    return {name: str(version) for name, version in highest.items()}


def highest_installed(root: Path, name: str) -> Version | None:
    """The highest version of ``name`` ever confirmed here, or None."""
    recorded = _read(root)[0].get(name)
    if recorded is None:
        return None
    try:
        return parse_version(recorded)
    except ModelUpdateError:
        logger.warning("model store: %s has a bad version for %s: %r", HISTORY, name, recorded)
        return None


def note_installed(root: Path, manifest: Manifest) -> None:
    """Record a confirmed release (write temp, fsync, rename, fsync dir).

    Raises:
        ModelUpdateError: ``io_error`` when the record cannot be written.
    """
    data, sound = _read(root)
    current = data.get(manifest.name)
    if sound and current is not None and parse_version(current) >= manifest.version:
        return  # a damaged record is written anew, from the releases on disk
    data[manifest.name] = str(manifest.version)
    write_json_atomic(
        root / HISTORY,
        data,
        error=f"cannot record {manifest.label}",
        hook=lambda point: None,
        point="history",
    )


def note_confirmed(root: Path, manifest: Manifest) -> None:
    """Count a release for replay protection once it is confirmed (its trial passed).

    Not before: a release rolled back because its trial was cut short (a stop, a crash)
    or failed its health check never served for good, and sending it again must work.
    A failure to record is logged only: the release serves, and the check against the
    active release still refuses older versions of its name.
    """
    try:
        note_installed(root, manifest)
    except ModelUpdateError as exc:
        logger.error("model update %s: cannot record it as installed: %s", manifest.label, exc)
