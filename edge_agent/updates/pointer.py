"""The active-release pointer file: read, atomic replace, removal.

``{state_dir}/models/active`` is a small JSON object::

    {"format": 1, "name": "doorcam", "version": "1.2.3", "dir": "doorcam/1.2.3",
     "previous": {"name": "doorcam", "version": "1.2.2", "dir": "doorcam/1.2.2"} | null,
     "switched_at": "2025-01-31T12:00:00Z", "trial": true}

``trial`` (present only while true) marks a release switched to but not yet found
healthy by the daemon: a crash before :func:`clear_trial` means it never proved itself,
and startup recovery goes back to ``previous``.

The pointer is replaced by writing ``active.tmp<pid>``, fsync, rename over ``active``,
fsync of the directory: readers see the old or the new pointer, never a mix.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from edge_agent.atomicfile import fsync_path
from edge_agent.errors import ModelUpdateError
from edge_agent.updates.release import InstalledRelease, write_json_atomic

POINTER = "active"


def read_pointer(root: Path) -> dict[str, Any] | None:
    """The pointer object, or None when absent.

    Raises:
        ModelUpdateError: ``corrupt`` when it cannot be parsed.
    """
    try:
        data = json.loads((root / POINTER).read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModelUpdateError("corrupt", f"active pointer unreadable: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ModelUpdateError("corrupt", "active pointer is not a pointer object")
    return data


def _ref(release: InstalledRelease) -> dict[str, str]:
    """The pointer's reference to a release."""
    return {
        "name": release.name,
        "version": release.version,
        "dir": f"{release.name}/{release.version}",
    }


def write_pointer(
    root: Path,
    release: InstalledRelease,
    previous: InstalledRelease | None,
    hook: Callable[[str], None],
    *,
    trial: bool = False,
) -> None:
    """Atomically make ``release`` active, remembering ``previous`` for rollback.

    Args:
        trial: the release still has to pass the daemon's health check.

    Raises:
        ModelUpdateError: ``io_error``.
    """
    data = {
        "format": 1,
        **_ref(release),
        "previous": None if previous is None else _ref(previous),
        "switched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if trial:
        data["trial"] = True
    _replace(root, data, hook)


def clear_trial(root: Path, hook: Callable[[str], None]) -> bool:
    """Drop the ``trial`` mark: the active release passed its health check.

    Returns:
        True when there was a mark to clear.

    Raises:
        ModelUpdateError: ``corrupt`` or ``io_error``.
    """
    data = read_pointer(root)
    if data is None or not data.pop("trial", False):
        return False
    _replace(root, data, hook)
    return True


def _replace(root: Path, data: dict[str, Any], hook: Callable[[str], None]) -> None:
    """Write the pointer object: temp file, fsync, rename, fsync of the directory."""
    write_json_atomic(
        root / POINTER, data, error="cannot switch the active pointer", hook=hook, point="pointer"
    )


def remove_pointer(root: Path) -> None:
    """Drop the pointer (the daemon goes back to its configured model)."""
    try:
        (root / POINTER).unlink()
        fsync_path(root)
    except FileNotFoundError:
        pass


def remove_temp_pointers(root: Path) -> None:
    """Delete pointer temp files a crash left behind."""
    for tmp in root.glob(f"{POINTER}.tmp*"):
        tmp.unlink()


def ref_dir(ref: Any) -> str | None:
    """``name/version`` of a pointer or of its ``previous`` reference."""
    if isinstance(ref, dict) and "name" in ref and "version" in ref:
        return f"{ref['name']}/{ref['version']}"
    return None
