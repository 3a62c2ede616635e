"""Snapshots kept on disk: one JPEG per event under ``{state_dir}/snapshots/{camera}/``,
the oldest removed first so the whole directory stays under ``max_disk_mb``.

Frigate keeps its snapshots in its media directory; a Raspberry Pi's SD card cannot take
an unbounded one, so here the bound is part of the feature. Files are written with the
project's atomic write (a power cut leaves the old file or the new one, never half a
JPEG) from the snapshot thread, never the frame path. A full or read-only disk is
logged and counted; the snapshot is still published.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

from edge_agent.atomicfile import write_atomic

logger = logging.getLogger(__name__)

SUFFIX = ".jpg"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_TEMP = re.compile(r"\.jpg\.tmp\d+$")  # what write_atomic leaves behind a power cut
ERROR_LOG_PERIOD_S = 60.0


class StoredFile(NamedTuple):
    """One kept snapshot: its path, size and modification time (for oldest-first)."""

    path: Path
    size: int
    mtime: float


def file_name(event_id: str, label: str) -> str:
    """``<event id>-<label>.jpg``: the event id is unique across restarts (start time and
    random letters), so one event's better snapshots replace its own file only."""
    return f"{_UNSAFE.sub('_', event_id)}-{_UNSAFE.sub('_', label)}{SUFFIX}"


def to_prune(files: list[StoredFile], max_bytes: int) -> list[StoredFile]:
    """The files to delete, oldest first, so that the rest total at most ``max_bytes``."""
    total = sum(f.size for f in files)
    doomed: list[StoredFile] = []
    for f in sorted(files, key=lambda f: (f.mtime, str(f.path))):
        if total <= max_bytes:
            break
        doomed.append(f)
        total -= f.size
    return doomed


class SnapshotStore:
    """The bounded directory of kept snapshots (used from the snapshot thread only).

    Args:
        root: ``{state_dir}/snapshots``.
        max_bytes: the bound on the total size of the kept JPEGs.
    """

    def __init__(self, root: str | os.PathLike, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.saved = 0
        self.pruned = 0
        self.errors = 0
        self._files: dict[Path, StoredFile] = {}
        self._error_logged_at = -ERROR_LOG_PERIOD_S

    def open(self) -> None:
        """Take stock of what an earlier run kept, remove its half-written temp files,
        and prune to the bound (it may have been lowered). Errors are logged, not raised."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for path in self.root.glob("*/*"):
                if _TEMP.search(path.name):
                    path.unlink()
                elif path.suffix == SUFFIX and path.is_file():
                    st = path.stat()
                    self._files[path] = StoredFile(path, st.st_size, st.st_mtime)
        except OSError as exc:
            self._failed("snapshots", exc)
        self._prune("snapshots")

    def save(self, camera: str, label: str, event_id: str, jpeg: bytes) -> Path | None:
        """Write one event's snapshot (replacing that event's earlier one), then prune.

        Returns:
            The file written, None when the disk refused it (logged and counted).
        """
        path = self.root / _UNSAFE.sub("_", camera) / file_name(event_id, label)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, jpeg, mode=0o640)
        except OSError as exc:
            self._failed(camera, exc)
            return None
        self._files[path] = StoredFile(path, len(jpeg), time.time())
        self.saved += 1
        self._prune(camera, keep=path)
        return path

    @property
    def total_bytes(self) -> int:
        """The size of every kept snapshot."""
        return sum(f.size for f in self._files.values())

    def _prune(self, camera: str, keep: Path | None = None) -> None:
        """Delete the oldest files until the rest fit the bound (never the newest one)."""
        candidates = [f for f in self._files.values() if f.path != keep]
        budget = self.max_bytes - (self._files[keep].size if keep in self._files else 0)
        for f in to_prune(candidates, max(0, budget)):
            try:
                f.path.unlink()
            except FileNotFoundError:
                pass  # removed by hand meanwhile: the bound holds all the same
            except OSError as exc:
                self._failed(camera, exc)
                continue
            del self._files[f.path]
            self.pruned += 1

    def _failed(self, camera: str, exc: OSError) -> None:
        """Count a disk error; log it at most once a minute (a full disk repeats)."""
        self.errors += 1
        now = time.monotonic()
        if now - self._error_logged_at >= ERROR_LOG_PERIOD_S:
            self._error_logged_at = now
            logger.error(
                "camera %s: cannot keep snapshots in %s: %s (%d errors so far; they are "
                "still published)",
                camera,
                self.root,
                exc.strerror or exc,
                self.errors,
            )
