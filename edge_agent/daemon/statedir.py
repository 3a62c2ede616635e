"""The daemon's claim on its state directory: one daemon per ``device.state_dir``.

A second ``edge-agent run`` on a running daemon's state dir (started by hand beside the
service, or a second unit given the same config) would run the model store's startup
recovery over the first one's store (sweeping its downloads in progress, undoing a
release on trial), answer the first one's update requests as interrupted, and take turns
with it on the broker under one client id. ``{state_dir}/edge-agent.lock`` is ``flock``-ed
for the daemon's life: the second one stops before it touches anything. The kernel drops
the lock with the process, so the file a SIGKILL or a power cut leaves behind never
stops the next start.
"""

from __future__ import annotations

import fcntl
import logging
import os

from edge_agent.atomicfile import remove_leftovers
from edge_agent.errors import ConfigError

logger = logging.getLogger(__name__)

LOCK_NAME = "edge-agent.lock"


def claim_state_dir(state_dir: str) -> int | None:
    """Create the state dir if needed and lock it for this process.

    Returns:
        The lock's file descriptor (close it at the end of the shutdown), or None when
        the directory cannot hold a lock (read-only, another owner: logged; the daemon
        runs, and the spool reports the storage problem).

    Raises:
        ConfigError: another process holds the state dir (key ``device.state_dir``).
    """
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as exc:  # the spool reports it as storage_error and retries
        logger.error("device.state_dir %s: %s", state_dir, exc.strerror)
    path = os.path.join(state_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        try:  # a read-only state dir can still be locked through an existing file
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            logger.warning(
                "device.state_dir %s: cannot lock %s (%s); a second daemon on this "
                "directory would not be stopped",
                state_dir,
                path,
                exc.strerror or exc,
            )
            return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            raise ConfigError(
                f"{state_dir} is in use by another edge-agent{holder}; one daemon per "
                "state directory",
                key="device.state_dir",
            ) from exc
        logger.warning("device.state_dir %s: cannot lock %s: %s", state_dir, path, exc.strerror)
        return None
    try:  # who holds it, for the message of the next daemon that tries
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # opened read-only: the lock holds all the same
    # Ours alone now: the temp files of writes a power cut interrupted (counts.json,
    # detect.json, the update journal...) would never be written again otherwise.
    if leftovers := remove_leftovers(state_dir):
        logger.info("device.state_dir %s: removed %s of interrupted writes", state_dir, leftovers)
    return fd


def _holder(fd: int) -> str:
    """`` (pid N)`` as the lock's holder wrote it, or "" when unknown."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""
