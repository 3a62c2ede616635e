"""Process and long-run helpers for the chaos tests and the soak test.

* :func:`process_tree` / :func:`sample_tree` / :func:`live`: the daemon's processes (it,
  its forkserver, workers and resource tracker) and their RSS, open fds and threads,
  read from /proc.
* :class:`CountingSubscriber`: an MQTT subscriber that only counts (for long runs).
* :func:`write_fast_clip`: a copy of a clip that a paced file camera reads flat out.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

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


class CountingSubscriber:
    """A paho subscriber that counts messages per topic and keeps only the latest payload.

    For long runs, where :class:`~tests.support.broker.MqttSubscriber` would keep every
    message in memory.
    """

    def __init__(self, host: str, port: int, topics: Sequence[str]):
        import paho.mqtt.client as mqtt

        self.counts: dict[str, int] = {t: 0 for t in topics}
        self.latest: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"chaos-count-{os.getpid()}-{id(self):x}"
        )
        self._client.reconnect_delay_set(0.05, 1.0)
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._host, self._port = host, port

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1
            self.latest[msg.topic] = bytes(msg.payload)

    def start(self, timeout: float = 10.0) -> CountingSubscriber:
        """Connect and wait for the SUBACK."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        assert self._subscribed.wait(timeout), "counting subscriber not subscribed"
        return self

    def count(self, topic: str) -> int:
        with self._lock:
            return self.counts.get(topic, 0)

    def last_json(self, topic: str) -> Any:
        """The latest payload on topic, parsed, or None."""
        with self._lock:
            data = self.latest.get(topic)
        return json.loads(data) if data is not None else None

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


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
