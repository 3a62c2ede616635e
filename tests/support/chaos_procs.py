"""Process and long-run helpers for the chaos tests and the soak test.

* :func:`process_tree` / :func:`sample_tree` / :func:`live`: the daemon's processes (it,
  its forkserver, workers and resource tracker) and their RSS, open fds and threads,
  read from /proc.
* :func:`write_fast_clip`: a copy of a clip that a paced file camera reads flat out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2

# ---- process resources --------------------------------------------------------------------


class ProcSample(NamedTuple):
    """One process's resources."""

    pid: int
    name: str
    rss_kb: int
    fds: int
    threads: int


def _children() -> dict[int, list[int]]:
    """ppid -> child pids for every process now."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (the daemon, its forkserver and workers)."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def live(pids: Sequence[int]) -> list[int]:
    """The pids that still exist and are not zombies."""
    out = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            out.append(pid)
    return out


def sample(pid: int) -> ProcSample | None:
    """RSS, fd count and thread count of one process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields.get("VmRSS", "0 kB").split()[0])
    return ProcSample(pid, cmdline[:120], rss, fds, int(fields["Threads"]))


def sample_tree(pid: int) -> list[ProcSample]:
    """Samples of the daemon (first) and each live descendant."""
    return [s for s in map(sample, process_tree(pid)) if s is not None]


# ---- long runs ----------------------------------------------------------------------------


def write_fast_clip(source: Path, dest: Path, fps: float = 1000.0) -> Path:
    """Copy a clip with a header rate of ``fps``: a paced camera then reads it flat out."""
    cap = cv2.VideoCapture(str(source))
    writer = None
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = image.shape[:2]
                writer = cv2.VideoWriter(
                    str(dest), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h)
                )
                assert writer.isOpened(), f"cannot write {dest}"
            writer.write(image)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    assert writer is not None, f"no frames in {source}"
    return dest
