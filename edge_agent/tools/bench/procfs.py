"""Memory and CPU figures of any process, read from /proc (Linux).

The daemon is several processes (the daemon, the forkserver that forks workers, the
inference worker), so the benchmark reads each by pid rather than only itself. Every
reader returns None where /proc does not have the figure (not Linux, process gone).
"""

from __future__ import annotations

import os
import threading
import time
from typing import NamedTuple

_KB = 1024.0
_MIB = 1024.0 * 1024.0


class Memory(NamedTuple):
    """Resident memory of one process in MiB."""

    rss: float  # VmRSS: resident now
    peak: float  # VmHWM: the kernel's high-water mark of VmRSS
    pss: float | None  # proportional share (shared pages split between the sharers)


def _status(pid: int | str) -> dict[str, str]:
    """The key: value lines of /proc/<pid>/status."""
    fields: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def _kb(value: str | None) -> float | None:
    """'1234 kB' -> MiB."""
    if not value:
        return None
    return int(value.split()[0]) * _KB / _MIB


def memory(pid: int | str = "self", *, pss: bool = False) -> Memory | None:
    """RSS, peak RSS and (optionally) PSS of a process, in MiB.

    Args:
        pid: process id, or "self".
        pss: also read PSS; it walks every mapping of the process (about a
            millisecond), so samples taken while measuring CPU leave it out.

    Returns:
        The figures, or None when the process (or /proc) is not there.
    """
    try:
        fields = _status(pid)
    except OSError:
        return None
    rss, peak = _kb(fields.get("VmRSS")), _kb(fields.get("VmHWM"))
    if rss is None or peak is None:
        return None  # a zombie has no memory lines
    return Memory(rss, peak, _pss(pid) if pss else None)


def _pss(pid: int | str) -> float | None:
    """Pss from /proc/<pid>/smaps_rollup (kernel 4.14+), MiB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return _kb(line.split(":", 1)[1])
    except OSError:
        pass
    return None


def parent_pid(pid: int) -> int | None:
    """The parent of a process (the forkserver of a worker), None if unknown."""
    try:
        return int(_status(pid)["PPid"])
    except (OSError, KeyError, ValueError):
        return None


def _process_clock(pid: int | str) -> int | None:
    """The kernel's CPU-time clock id of a whole process (``clock_getcpuclockid``).

    Linux encodes it as ``(~pid << 3) | CPUCLOCK_SCHED``; it is readable for any
    process and counts nanoseconds, where /proc's stat counts 10 ms ticks.
    """
    if pid == "self":
        return time.CLOCK_PROCESS_CPUTIME_ID
    if isinstance(pid, int) or (isinstance(pid, str) and pid.isdigit()):
        return ((~int(pid)) << 3) | 2
    return None  # a "pid/task/tid" path: threads of other processes have no clock id


def _ticks(path: str) -> float | None:
    """User + system seconds from /proc/<path>/stat, at clock-tick resolution."""
    try:
        with open(f"/proc/{path}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it do not.
    rest = text.rsplit(")", 1)[-1].split()
    try:
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError):
        return None


def _schedstat(path: str) -> float | None:
    """Seconds on the CPU from /proc/<path>/schedstat (nanoseconds; CONFIG_SCHED_INFO)."""
    try:
        with open(f"/proc/{path}/schedstat", encoding="ascii") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pid: int | str = "self") -> float | None:
    """CPU seconds of a process (all its threads, living and exited), or of one thread.

    A short benchmark run spends a few milliseconds of CPU, below the 10 ms tick of
    /proc's stat, so the nanosecond clocks come first: the process CPU clock for a
    process, schedstat for a ``"pid/task/tid"`` thread. The tick count is the fallback.

    Args:
        pid: process id, "self", or ``"PID/task/TID"`` for one thread.

    Returns:
        Seconds, None if unknown (the process is gone, or no /proc).
    """
    clock = _process_clock(pid)
    if clock is not None:
        try:
            return time.clock_gettime_ns(clock) / 1e9
        except OSError:
            pass  # gone, or not Linux: the stat file says which
    elif (seconds := _schedstat(str(pid))) is not None:
        return seconds
    return _ticks(str(pid))


def children(pid: int) -> dict[int, str]:
    """The direct children of a process and their command lines (scans /proc).

    Args:
        pid: the parent.

    Returns:
        ``{child pid: command line}``; empty without /proc.
    """
    found: dict[int, str] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or parent_pid(int(entry)) != pid:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue  # it exited meanwhile
    return found


def daemon_processes(pid: int) -> dict[str, int | None]:
    """The processes of a running daemon, by role.

    The daemon's direct children are the multiprocessing forkserver (which forks the
    inference worker) and the resource tracker (which cleans up shared memory).

    Args:
        pid: the daemon's pid.

    Returns:
        ``{"daemon", "forkserver", "worker", "resource_tracker"}`` -> pid or None.
    """
    roles: dict[str, int | None] = dict.fromkeys(("forkserver", "worker", "resource_tracker"))
    roles = {"daemon": pid, **roles}
    for child, cmdline in children(pid).items():
        if "resource_tracker" in cmdline:
            roles["resource_tracker"] = child
        elif "forkserver" in cmdline:
            roles["forkserver"] = child
            workers = children(child)
            roles["worker"] = max(workers) if workers else None  # the newest
    return roles


def thread_cpu_seconds(
    pid: int | str = "self", names: dict[int, str] | None = None
) -> dict[str, float]:
    """CPU seconds per thread name (``/proc/PID/task/*/stat``), threads of one name summed.

    ``names`` maps native thread ids to names (``threading.enumerate()``'s
    ``native_id``); CPython before 3.14 does not set the kernel's thread name, so
    without it threads are named by ``comm`` (often just "python").

    This is the per-thread split of the daemon's CPU outside the worker (pipeline,
    camera, MQTT threads); a thread that exited between listing and reading is skipped.
    """
    split: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return split
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
                name = f.read().strip() or tid
            name = (names or {}).get(int(tid), name)
        except OSError:
            continue
        seconds = cpu_seconds(f"{pid}/task/{tid}")
        if seconds is not None:
            split[name] = split.get(name, 0.0) + seconds
    return split


def own_threads_cpu_seconds() -> dict[str, float]:
    """CPU seconds of each thread of this process, by Python thread name."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    return thread_cpu_seconds("self", names)


def split_ms_per_frame(
    before: dict[str, float], after: dict[str, float], frames: int
) -> dict[str, float]:
    """Per-thread ms of CPU per frame between two :func:`thread_cpu_seconds` samples,
    with a ``total`` (the P2' figure)."""
    if frames <= 0:
        return {}
    out = {name: (after[name] - before.get(name, 0.0)) * 1000.0 / frames for name in sorted(after)}
    out["total"] = sum(out.values())
    return out
