"""Pipeline statistics: per-stage latency percentiles, frame rate, counters, resources.

Everything keeps bounded memory (fixed-size windows), so the daemon can record every
frame for months. :meth:`PipelineStats.snapshot` returns a JSON-ready dict, published
on the stats topic and printed by the benchmark.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Callable

import numpy as np

from edge_agent.ratemeter import RateMeter

# The stages one frame goes through, in order; "end_to_end" is capture to publish.
STAGES = ("capture", "preprocess", "transfer", "invoke", "postprocess", "publish", "end_to_end")
# Counters present in every snapshot (at 0) so subscribers see a stable schema.
# Counters the daemon itself keeps; delivery counts live in the "mqtt" section and
# camera drops in "dropped_frames".
# "motion_skipped": frames of motion-gated cameras that skipped the model (nothing moved).
COUNTERS = ("frames", "errors", "worker_restarts", "motion_skipped")

_MS_DIGITS = 3
_FPS_DIGITS = 2


class LatencyTracker:
    """Rolling window of the most recent latency samples of one stage.

    Holds at most ``size`` samples and, when ``max_age`` is given, drops samples older
    than that many seconds. Not thread-safe on its own: :class:`PipelineStats` locks.

    Args:
        size: maximum samples kept (memory bound).
        max_age: optional age limit in seconds for samples in the window.
        clock: monotonic clock in seconds (injectable for tests).

    Raises:
        ValueError: if ``size`` < 1 or ``max_age`` is not positive.
    """

    def __init__(
        self,
        size: int = 1000,
        max_age: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}")
        if max_age is not None and not max_age > 0:
            raise ValueError(f"max_age must be positive, got {max_age!r}")
        self._values: deque[float] = deque(maxlen=size)
        self._times: deque[float] = deque(maxlen=size)
        self._max_age = max_age
        self._clock = clock
        self.total = 0
        """Samples ever added (the window holds only the recent ones)."""

    def add(self, ms: float) -> None:
        """Add one latency sample in milliseconds."""
        self._values.append(float(ms))
        self._times.append(self._clock())
        self.total += 1

    def _expire(self) -> None:
        """Drop samples older than max_age."""
        if self._max_age is None:
            return
        horizon = self._clock() - self._max_age
        while self._times and self._times[0] < horizon:
            self._times.popleft()
            self._values.popleft()

    def samples(self) -> np.ndarray:
        """The samples currently in the window, oldest first, as float64."""
        self._expire()
        return np.fromiter(self._values, dtype=np.float64, count=len(self._values))

    @property
    def count(self) -> int:
        """Number of samples in the window."""
        self._expire()
        return len(self._values)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0..100, linear interpolation) of the window, None if empty."""
        values = self.samples()
        if values.size == 0:
            return None
        return float(np.percentile(values, q))

    @property
    def p50(self) -> float | None:
        """Median of the window in ms, None if empty."""
        return self.percentile(50)

    @property
    def p99(self) -> float | None:
        """99th percentile of the window in ms, None if empty."""
        return self.percentile(99)

    @property
    def mean(self) -> float | None:
        """Mean of the window in ms, None if empty."""
        values = self.samples()
        return float(values.mean()) if values.size else None

    def summary(self, digits: int = _MS_DIGITS) -> dict[str, float | int | None]:
        """``{"p50", "p99", "mean", "max", "count"}`` of the window, rounded.

        Args:
            digits: decimals kept in the ms values.

        Returns:
            JSON-ready dict; the float values are None when the window is empty.
        """
        values = self.samples()
        if values.size == 0:
            return {"p50": None, "p99": None, "mean": None, "max": None, "count": 0}
        p50, p99 = np.percentile(values, (50, 99))
        return {
            "p50": round(float(p50), digits),
            "p99": round(float(p99), digits),
            "mean": round(float(values.mean()), digits),
            "max": round(float(values.max()), digits),
            "count": int(values.size),
        }


class PipelineStats:
    """Thread-safe latency, rate and counter aggregation for the whole pipeline.

    Stages and counters not listed at construction are created on first use.
    ``incr(rate_counter)`` (default ``"frames"``) also drives the fps meter.

    Args:
        stages: stage names reported even before their first sample.
        counters: counter names reported (at 0) even before their first increment.
        window: samples kept per stage.
        max_age: optional age limit in seconds for latency samples.
        rate_window: seconds of history for fps.
        rate_counter: the counter whose increments are measured as fps.
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        stages: Iterable[str] = STAGES,
        counters: Iterable[str] = COUNTERS,
        *,
        window: int = 1000,
        max_age: float | None = None,
        rate_window: float = 5.0,
        rate_counter: str = "frames",
        clock: Callable[[], float] = time.monotonic,
    ):
        self._clock = clock
        self._window = window
        self._max_age = max_age
        self._lock = threading.Lock()
        self._stages = {name: self._tracker() for name in stages}
        self._counters = dict.fromkeys(counters, 0)
        self._rate_counter = rate_counter
        self._rate = RateMeter(rate_window, clock=clock)
        self._started = clock()

    def _tracker(self) -> LatencyTracker:
        """A new tracker with this instance's window settings."""
        return LatencyTracker(self._window, self._max_age, clock=self._clock)

    def record(self, stage: str, ms: float) -> None:
        """Record one latency sample.

        Args:
            stage: stage name, e.g. ``"invoke"``.
            ms: duration in milliseconds.
        """
        with self._lock:
            tracker = self._stages.get(stage)
            if tracker is None:
                tracker = self._stages[stage] = self._tracker()
            tracker.add(ms)

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter (created at 0 on first use).

        Args:
            name: counter name, e.g. ``"dropped"``.
            n: increment.
        """
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + n
        if name == self._rate_counter:
            self._rate.tick(n)

    def snapshot(self, *, resources: bool = False) -> dict:
        """A JSON-ready view of everything, with rounded floats.

        Args:
            resources: also include :func:`resource_usage` under ``"resources"``.

        Returns:
            ``{"fps": float, "uptime_s": float, "latency_ms": {stage: {"p50", "p99",
            "mean", "max", "count"}}, "counters": {name: int}}`` (+ ``"resources"``).
            Latency values are None for stages without samples in the window.
        """
        with self._lock:
            latency = {name: tracker.summary() for name, tracker in self._stages.items()}
            counters = dict(self._counters)
        snap: dict = {
            "fps": round(self._rate.rate(), _FPS_DIGITS),
            "uptime_s": round(self._clock() - self._started, 1),
            "latency_ms": latency,
            "counters": counters,
        }
        if resources:
            snap["resources"] = resource_usage()
        return snap


def _rss_bytes() -> int | None:
    """Resident set size now, from /proc; None where /proc is absent."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int | None:
    """Peak resident set size from getrusage (kilobytes on Linux)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _open_fds() -> int | None:
    """Number of open file descriptors of this process, None if unknown."""
    for fd_dir in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        # listdir itself holds one descriptor on the directory while reading it.
        return max(0, len(names) - 1)
    return None


def _thread_count() -> int:
    """OS threads of this process (native ones too, e.g. TFLite/OpenCV workers)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return threading.active_count()  # Python threads only: a lower bound


def resource_usage() -> dict[str, float | int | None]:
    """Memory, descriptors, threads and CPU time of this process.

    Returns:
        ``{"rss_mb", "max_rss_mb", "open_fds", "threads", "cpu_user_s",
        "cpu_system_s"}``. ``rss_mb`` is the current resident set (/proc/self/statm),
        ``max_rss_mb`` the kernel's peak from getrusage (updated lazily, so it can
        briefly read below ``rss_mb``); without /proc ``rss_mb`` falls back to the
        peak. ``threads`` counts native threads too. Unknown values are None.
    """
    rss = _rss_bytes()
    peak = _max_rss_bytes()
    if rss is None:
        rss = peak
    times = os.times()
    mib = 1024 * 1024
    return {
        "rss_mb": None if rss is None else round(rss / mib, 1),
        "max_rss_mb": None if peak is None else round(peak / mib, 1),
        "open_fds": _open_fds(),
        "threads": _thread_count(),
        "cpu_user_s": round(times.user, 2),
        "cpu_system_s": round(times.system, 2),
    }
