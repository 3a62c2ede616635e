"""Release directories: what an installed release is, and checks on its files.

A release directory holds the files its manifest lists, ``manifest.json`` (the signed
envelope as received) and ``.installed`` (``{"installed_at": unix time}``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, NamedTuple

from edge_agent.atomicfile import fsync_path, write_atomic
from edge_agent.errors import ModelUpdateError
from edge_agent.inference.model_info import is_tflite
from edge_agent.updates.manifest import MANIFEST_FILE, FileEntry, Manifest, parse_manifest
from edge_agent.updates.signing import load_envelope, parse_envelope

logger = logging.getLogger(__name__)

INSTALLED_MARK = ".installed"
TRASH = ".trash"


class InstalledRelease(NamedTuple):
    """A complete release in the store."""

    name: str
    version: str
    path: Path
    manifest: Manifest
    installed_at: float = 0.0

    def file(self, role: str) -> Path | None:
        """Path of the file with a role (``model``, ``cpu_model``, ``labels``...), or None."""
        entry = self.manifest.file(role)
        return None if entry is None else self.path / entry.name

    @property
    def label(self) -> str:
        """``name@version`` for messages."""
        return f"{self.name}@{self.version}"


class Staging(NamedTuple):
    """A release being assembled in ``.staging/<id>/``."""

    id: str
    path: Path
    manifest: Manifest


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(
    path: Path, data: Any, *, error: str, hook: Callable[[str], None], point: str
) -> None:
    """Replace a JSON file so readers see the old or the new one, never a mix.

    Write ``<name>.tmp<pid>``, fsync, rename over ``path``, fsync the directory. ``hook``
    is called at ``{point}_written``, ``{point}_synced`` and ``{point}_renamed`` (crash
    tests kill the process there).

    Raises:
        ModelUpdateError: ``io_error``, with ``error`` leading the message.
    """
    raw = json.dumps(data, sort_keys=True).encode("utf-8")
    try:
        write_atomic(path, raw, hook=hook, point=point)
    except OSError as exc:
        raise ModelUpdateError("io_error", f"{error}: {exc}") from exc


def read_json_record(path: Path, kind: type, instead: str) -> Any:
    """A store record written by :func:`write_json_atomic`, if it is a ``kind``.

    Returns:
        The document; None when it is missing, or (logged, with ``instead`` saying what is
        done without it) unreadable or JSON of another type (a hand edit, a bad disk).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("model store: %s unreadable (%s); %s", path.name, exc, instead)
        return None
    if not isinstance(data, kind):
        what = "object" if kind is dict else "list"
        logger.warning("model store: %s is no JSON %s; %s", path.name, what, instead)
        return None
    return data


def check_file(path: Path, entry: FileEntry, *, full: bool = True) -> None:
    """Check one file: size, then (``full``) sha256 and content.

    Content checks: ``model``/``cpu_model`` carry the TFLite identifier ``TFL3`` at
    bytes 4..8; ``labels`` is UTF-8 text.

    Raises:
        ModelUpdateError: ``truncated``, ``too_large``, ``sha256_mismatch``,
            ``not_tflite``, ``bad_labels``, ``corrupt`` (missing or unreadable).
    """
    try:
        size = path.stat().st_size
        if size != entry.size:
            reason = "truncated" if size < entry.size else "too_large"
            raise ModelUpdateError(
                reason, f"{entry.name}: {size} bytes, manifest says {entry.size}"
            )
        if not full:
            return
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ModelUpdateError(
                "sha256_mismatch", f"{entry.name}: sha256 {actual}, manifest says {entry.sha256}"
            )
        if entry.role in ("model", "cpu_model"):
            with open(path, "rb") as f:
                if not is_tflite(f.read(8)):
                    raise ModelUpdateError("not_tflite", f"{entry.name} is not a TFLite flatbuffer")
        elif entry.role == "labels":
            try:
                path.read_text("utf-8")
            except UnicodeDecodeError as exc:
                raise ModelUpdateError("bad_labels", f"{entry.name} is not UTF-8 text") from exc
    except OSError as exc:
        raise ModelUpdateError("corrupt", f"{path}: {exc.strerror or exc}") from exc


def check_release_files(path: Path, manifest: Manifest, *, full: bool) -> None:
    """Check every file of a manifest in ``path`` (see :func:`check_file`).

    Raises:
        ModelUpdateError: as :func:`check_file`.
    """
    for entry in manifest.files:
        check_file(path / entry.name, entry, full=full)


def load_release(path: Path, *, full: bool) -> InstalledRelease:
    """Read and check a release directory ``models/<name>/<version>``.

    Args:
        path: the directory.
        full: also re-hash every file (else sizes only).

    Raises:
        ModelUpdateError: ``corrupt`` (no/invalid manifest, wrong place),
            ``sha256_mismatch``, ``truncated``...
    """
    try:
        envelope = parse_envelope(load_envelope((path / MANIFEST_FILE).read_bytes()))
        manifest = parse_manifest(envelope.manifest)
    except OSError as exc:
        raise ModelUpdateError(
            "corrupt", f"{path}: no readable {MANIFEST_FILE}: {exc.strerror}"
        ) from exc
    except ModelUpdateError as exc:
        raise ModelUpdateError("corrupt", f"{path}: {exc}") from exc
    if (path.parent.name, path.name) != (manifest.name, str(manifest.version)):
        raise ModelUpdateError("corrupt", f"{path} holds {manifest.label}")
    check_release_files(path, manifest, full=full)
    try:
        stamp = float(json.loads((path / INSTALLED_MARK).read_text())["installed_at"])
    except (OSError, ValueError, KeyError, TypeError):
        stamp = path.stat().st_mtime
    return InstalledRelease(manifest.name, str(manifest.version), path, manifest, stamp)


def trash_release(root: Path, path: Path) -> None:
    """Remove a release from view in one atomic rename into ``root/.trash``.

    A crash after the rename leaves only garbage in ``.trash``, never a half-deleted
    release; :func:`empty_trash` (or the store's recovery) deletes it.
    """
    trash = root / TRASH
    trash.mkdir(exist_ok=True)
    os.rename(path, trash / uuid.uuid4().hex)
    fsync_path(path.parent)
    try:
        path.parent.rmdir()  # the <name> dir, when it held only this version
    except OSError:
        pass


def empty_trash(root: Path) -> None:
    """Delete what was trashed."""
    shutil.rmtree(root / TRASH, ignore_errors=True)
