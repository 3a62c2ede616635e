"""Capture threads a stop left blocked in OpenCV, waited for before Python finalizes.

A camera's stop waits a bounded time; a thread blocked in its backend (an open or a read
waiting out its own timeout, ``stale_after``) is left behind, a daemon thread. Should
that call return while the interpreter finalizes, the thread is torn down inside OpenCV's
C++ wrapper and the process aborts (SIGABRT, "terminate called without an active
exception": a core dump, and systemd sees the service fail). So such a thread is also
waited for at exit (``atexit``, which runs before finalization), until its backend's own
timeout has passed (10 s after the stop at most).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time

logger = logging.getLogger(__name__)

SLACK_S = 1.0  # beyond the backend's timeout (FFmpeg looks at its deadline every 0.1 s)
# The longest wait after a stop, whatever the timeout: a service stop must end well within
# systemd's TimeoutStopSec (20 s in our unit) or it is killed.
MAX_WAIT_S = 10.0

_lock = threading.Lock()
_left: dict[threading.Thread, tuple[str, float]] = {}  # thread -> (camera, wait until)


def left_blocked(name: str, thread: threading.Thread, stop_asked: float, timeout: float) -> None:
    """Log a capture thread still in its backend after its stop, and have the process wait
    for it at exit.

    Args:
        name: the camera name.
        thread: its capture thread.
        stop_asked: ``time.monotonic()`` when its stop was asked.
        timeout: the backend's own open and read timeout, in seconds.
    """
    logger.warning(
        "camera %s: capture thread still blocked in the backend %.1fs after the "
        "stop; it exits when the backend returns",
        name, time.monotonic() - stop_asked,
    )  # fmt: skip
    with _lock:
        for ended in [t for t in _left if not t.is_alive()]:  # a long process stops many
            del _left[ended]
        _left[thread] = (name, stop_asked + min(timeout + SLACK_S, MAX_WAIT_S))


@atexit.register
def _wait_for_left_threads() -> None:
    """At exit, before finalization: join each thread left blocked, up to its deadline."""
    with _lock:
        left = list(_left.items())
        _left.clear()
    for thread, (name, until) in left:
        thread.join(max(0.0, until - time.monotonic()))
        if thread.is_alive():
            logger.warning("camera %s: capture thread still in the backend at exit", name)
