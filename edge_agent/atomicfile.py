"""The one atomic file write: temp file, fsync, rename, fsync of the directory.

Used by everything that must survive a power cut whole or not at all: the update store's
pointer and version history, the spool's cursor, release files written by the tools.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path


def fsync_path(path: os.PathLike | str) -> None:
    """Make a file's data, or a directory's entries (renames, creations), durable.

    Raises:
        OSError: the path cannot be opened or the storage failed to sync.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: os.PathLike | str,
    data: bytes,
    *,
    mode: int = 0o644,
    hook: Callable[[str], None] | None = None,
    point: str = "write",
) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix.

    Writes ``<name>.tmp<pid>``, fsyncs it, renames it over ``path`` and fsyncs the
    directory, so the rename itself survives a power cut. ``hook``, when given, is
    called with ``{point}_written``, ``{point}_synced`` and ``{point}_renamed`` (crash
    tests kill the process there).

    Raises:
        OSError: the write, sync or rename failed (the temp file is removed); a short
            write reads as ENOSPC.
    """
    target = Path(path)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, "short write")
                view = view[written:]
            if hook:
                hook(f"{point}_written")
            os.fsync(fd)
        finally:
            os.close(fd)
        if hook:
            hook(f"{point}_synced")
        os.replace(tmp, target)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # never created, or already renamed
        raise
    if hook:
        hook(f"{point}_renamed")
    fsync_path(target.parent)


def remove_leftovers(directory: os.PathLike | str) -> list[str]:
    """Remove the temp files that writes killed before their rename left in ``directory``.

    A ``<name>.tmp<pid>`` is never written again (the next run has another pid), so each
    power cut during a :func:`write_atomic` would leave one for good. Call it only while
    nothing else writes there (e.g. under the directory's lock).

    Returns:
        The names removed.
    """
    removed = []
    for path in Path(directory).glob("*.tmp*"):
        if path.name.rpartition(".tmp")[2].isdigit():
            try:
                path.unlink()
            except OSError:
                continue  # a directory, or already gone: left alone
            removed.append(path.name)
    return removed
