"""How many CPU cores this process may really use: the affinity mask and the cgroup quota.

In a container started with ``--cpus=2`` on an 8-core host, ``os.cpu_count()`` and even
the affinity mask say 8, but the kernel's CFS quota lets the process run for 2 cores' worth
of time per period. An interpreter given 8 threads there is throttled in the middle of
every invoke, and the capture and MQTT threads stall with it. The default interpreter
thread count is therefore taken from the smaller of the two.
"""

from __future__ import annotations

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def _own_cgroups(proc_cgroup: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> path (``""`` is the cgroup v2 unified one)."""
    paths: dict[str, str] = {}
    try:
        with open(proc_cgroup, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) == 3:
                    for controller in parts[1].split(","):
                        paths[controller] = parts[2]
    except OSError:
        pass
    return paths


def _read(path: str) -> str | None:
    """A cgroup file's content, None when it is not there."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def quota_cores(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (quota / period), None when unlimited.

    cgroup v2: ``cpu.max`` ("max 100000" or "200000 100000"); cgroup v1:
    ``cpu.cfs_quota_us`` (-1 when unlimited) and ``cpu.cfs_period_us``. Both are looked up
    at the process's own cgroup path and at the root of the hierarchy (a container sees its
    own cgroup as the root).
    """
    own = _own_cgroups(proc_cgroup)
    v2 = own.get("", "/").lstrip("/")
    for base in dict.fromkeys((os.path.join(root, v2), root)):
        text = _read(os.path.join(base, "cpu.max"))
        if text:
            quota, _, period = text.partition(" ")
            if quota == "max":
                return None
            try:
                return int(quota) / int(period or "100000")
            except (ValueError, ZeroDivisionError):
                return None
    v1 = own.get("cpu", "/").lstrip("/")
    for mount in ("cpu,cpuacct", "cpu"):
        for base in dict.fromkeys((os.path.join(root, mount, v1), os.path.join(root, mount))):
            quota, period = (
                _read(os.path.join(base, f)) for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us")
            )
            if quota is None or period is None:
                continue
            try:
                q, p = int(quota), int(period)
            except ValueError:
                return None
            return q / p if q > 0 and p > 0 else None
    return None


def available_cores(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> int:
    """Cores this process can use: the affinity mask, lowered to the cgroup quota (rounded
    up: a 1.5-core quota still lets two threads run half the time), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = quota_cores(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)
