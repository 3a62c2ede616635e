"""When the systemd watchdog is fed without a processed frame: every camera is retrying.

Processed frames feed the watchdog, so a stalled pipeline or a wedged camera gets the
service restarted. A camera that is unplugged, or a stream that is down, gives no frame
either, but there the daemon is doing what it promises: the camera's thread retries with
backoff and the status says so. A restart would not bring the camera back; systemd would
restart the daemon every ``WatchdogSec`` until its start limit, then leave the service
failed, and the box would stay down when the camera came back. So while *every* camera
is reconnecting, and each made an attempt lately (within twice its current backoff plus
:data:`RETRY_GRACE`, which covers an open timing out), the watchdog is fed as well. A
camera that shows ``streaming`` without frames, or stops attempting, still stops it.
With no camera enabled at all (a valid config: the daemon still takes commands) there is
no frame to wait for, and the pipeline loop, still turning, feeds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from edge_agent.capture.health import CameraState, CameraStats

RETRY_GRACE = 60.0  # seconds an attempt may take beyond the backoff (an open timing out)
CHECK_EVERY = 1.0  # seconds between looks at the cameras


class RetryWatch:
    """Tells whether every camera is down and retrying (see the module docstring).

    Args:
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._attempts: dict[str, tuple[int, float]] = {}  # camera -> (reconnects, seen at)
        self._next = 0.0

    def due(self) -> bool:
        """True at most every CHECK_EVERY seconds (the caller then reads the stats)."""
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + CHECK_EVERY
        return True

    def feeds(self, cameras: Sequence[CameraStats]) -> bool:
        """True when the watchdog is to be fed without a processed frame: no camera is
        enabled, or every one is retrying (:meth:`all_retrying`)."""
        return not cameras or self.all_retrying(cameras)

    def all_retrying(self, cameras: Iterable[CameraStats]) -> bool:
        """True when there is a camera, every one is reconnecting, and each one's attempt
        counter moved within ``2 * backoff + RETRY_GRACE`` seconds."""
        now = self._clock()
        verdict = None
        for stats in cameras:
            seen = self._attempts.get(stats.name)
            if seen is None or seen[0] != stats.reconnects:
                seen = self._attempts[stats.name] = (stats.reconnects, now)
            retrying = stats.state == CameraState.RECONNECTING and (
                now - seen[1] <= 2 * stats.backoff + RETRY_GRACE
            )
            verdict = retrying if verdict is None else verdict and retrying
        return bool(verdict)
