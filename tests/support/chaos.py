"""Helpers for the chaos half of the fault suite (tests/faults/test_chaos_*.py, test_soak.py).

* :func:`running_daemon`: an ``edge-agent run`` subprocess (tests/support/daemon.py) whose
  whole process group is killed on exit, with its log tail printed when the block failed.
* :func:`figure`: the one-line ``FIGURE name: k=v ...`` summary every chaos test prints.
* :class:`MjpegServer`: a network camera (MJPEG over HTTP, ``multipart/x-mixed-replace``)
  that can be stopped (cutting live streams) and restarted on the same port.
* :func:`tmpfs`: a size-limited tmpfs mount (disk-full tests); :func:`fill_disk` fills it.
* :func:`demo_release` / :func:`store_problems`: signed releases of the demo model and a
  check that every installed release in a model store matches its manifest.

Process sampling and long-run helpers are in :mod:`tests.support.chaos_procs`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import pytest

from tests.support.daemon import DaemonProcess
from tests.support.mjpeg import MjpegHandler
from tests.support.paths import REPO
from tests.support.updates_release import Release, make_release

DEMO = REPO / "models" / "demo"


# ---- the daemon ---------------------------------------------------------------------------


@contextlib.contextmanager
def running_daemon(workdir: Path, port: int, *args: Any, **kw: Any) -> Iterator[DaemonProcess]:
    """Start a :class:`DaemonProcess` in ``workdir``; kill its process group on exit.

    Args:
        workdir: the daemon's directory (config, ``state/``, log); reused across restarts.
        port: the broker port.
        *args, **kw: as for :class:`DaemonProcess` (source, model, labels, env, overrides).

    Yields:
        The started daemon. On an exception its log tail is printed (pytest shows it).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    daemon = DaemonProcess(workdir, port, *args, **kw).start()
    try:
        yield daemon
    except BaseException:
        print(f"---- daemon log {daemon.log_path} ----\n{daemon.log_tail(8000)}")
        raise
    finally:
        daemon.kill_group()


def log_count(daemon: DaemonProcess, pattern: str, after: int = 0) -> int:
    """How many times a regex matches the daemon's log from character ``after``."""
    import re

    return len(re.findall(pattern, daemon.log()[after:]))


def figure(name: str, **values: Any) -> str:
    """Print (and return) the test's one-line figure: ``FIGURE name: k=v k=v``."""
    parts = []
    for key, value in values.items():
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={text}")
    line = f"FIGURE {name}: {' '.join(parts)}"
    print(line)
    return line


def first_occurrences(ids: Sequence[int]) -> list[int]:
    """The ids in arrival order with redeliveries removed."""
    seen: set[int] = set()
    out = []
    for i in ids:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def missing_ids(ids: Sequence[int]) -> list[int]:
    """Ids absent from the contiguous range between the smallest and the largest."""
    if not ids:
        return []
    present = set(ids)
    return [i for i in range(min(present), max(present) + 1) if i not in present]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of values by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# ---- a network camera ---------------------------------------------------------------------


def jpeg_frames(clip: Path, limit: int | None = None, quality: int = 80) -> list[bytes]:
    """Every frame of a video file as JPEG bytes (the payload of an MJPEG stream)."""
    cap = cv2.VideoCapture(str(clip))
    frames: list[bytes] = []
    try:
        while limit is None or len(frames) < limit:
            ok, image = cap.read()
            if not ok:
                break
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            assert ok, f"cannot JPEG-encode a frame of {clip}"
            frames.append(data.tobytes())
    finally:
        cap.release()
    assert frames, f"no frames decoded from {clip}"
    return frames


class _StreamHandler(MjpegHandler):
    """Serves the endless multipart stream until the client or the server goes.

    While the owner is stalled, a stream goes silent for good and a new request gets no
    answer: what a camera that lost power or network looks like from the client.
    """

    server: _StreamServer

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        with srv.lock:
            srv.owner.connections += 1
            srv.live.add(self.connection)
        owner = srv.owner
        try:
            if owner.stalled.is_set():
                self._silent()
                return
            self.start_stream(Cache_Control="no-cache")
            frames, period, i = srv.owner.frames, 1.0 / srv.owner.fps, 0
            due = time.monotonic()
            while not srv.stopping.is_set():
                if owner.stalled.is_set():
                    self._silent()
                    return
                self.send_part(frames[i % len(frames)])
                i += 1
                due += period
                srv.stopping.wait(max(0.0, due - time.monotonic()))
        except OSError:
            pass  # the client went away, or stop() cut the connection
        finally:
            with srv.lock:
                srv.live.discard(self.connection)

    def _silent(self) -> None:
        """Send nothing until the stall ends (then drop the connection) or the server stops."""
        while self.server.owner.stalled.is_set() and not self.server.stopping.wait(0.05):
            pass


class _StreamServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MjpegServer:
    """An MJPEG-over-HTTP camera on loopback that can vanish and come back on its port.

    Args:
        frames: JPEG images served in a loop (see :func:`jpeg_frames`).
        fps: frames per second per client.

    Attributes:
        connections: stream requests served so far (across restarts).
        stalled: set it to make the camera go silent without closing anything (see
            :class:`_StreamHandler`); clear it to let new requests through again.
    """

    def __init__(self, frames: Sequence[bytes], fps: float = 15.0):
        self.frames, self.fps = list(frames), fps
        self.connections = 0
        self.stalled = threading.Event()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._server: _StreamServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> None:
        """Listen again on the same port (retrying briefly while the old socket lingers)."""
        assert self._server is None, "already running"
        deadline = time.monotonic() + 5.0
        while True:
            try:
                server = _StreamServer(("127.0.0.1", self.port), _StreamHandler)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        server.owner, server.lock, server.live = self, threading.Lock(), set()
        server.stopping = threading.Event()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut every live stream (the camera sees the connection drop)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        with server.lock:
            live = list(server.live)
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5.0)

    def __enter__(self) -> MjpegServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- a small disk -------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. ``"16m"``) at ``path`` for the block.

    Skips the test when mounting is not possible here (needs root or CAP_SYS_ADMIN).
    """
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("disk-full tests mount a size-limited tmpfs: run as root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {path}: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        for _ in range(50):  # a just-killed process may still hold files open briefly
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def free_bytes(path: Path) -> int:
    """Bytes available to unprivileged writers on path's filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill_disk(filler: Path, leave: int = 0) -> int:
    """Write ``filler`` until the filesystem has at most ``leave`` bytes free.

    Returns:
        Bytes written.
    """
    written = 0
    chunk = b"\0" * 65536
    with open(filler, "ab") as f:
        while True:
            room = free_bytes(filler.parent) - leave
            if room <= 0:
                break
            try:
                f.write(chunk[: min(len(chunk), room)])
                f.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            written += min(len(chunk), room)
    return written


# ---- model releases -----------------------------------------------------------------------


@dataclass
class DemoReleases:
    """Signed releases of the demo detector, made on demand, one per version."""

    root: Path
    key: Any
    name: str = "blobs"

    def make(self, version: str) -> Release:
        """``root/<name>/<version>/`` with the demo model and labels, signed."""
        files = {
            "color_blobs.tflite": ("model", (DEMO / "color_blobs.tflite").read_bytes()),
            "labels.txt": ("labels", (DEMO / "labels.txt").read_bytes()),
        }
        return make_release(self.root, self.key, version, name=self.name, files=files, task="auto")


def demo_release(root: Path, key: Any, version: str, name: str = "blobs") -> Release:
    """One signed release of the demo detector (see :class:`DemoReleases`)."""
    return DemoReleases(root, key, name).make(version)


def store_problems(models_root: Path) -> list[str]:
    """Everything wrong with the releases in a model store (empty list: all complete).

    Every ``<name>/<version>/`` directory must hold a manifest whose files all exist with
    the listed size and SHA-256, and the ``active`` pointer (when present) must name one.
    Staging and trash directories (dot-prefixed) are leftovers startup sweeps, so skipped.
    """
    problems: list[str] = []
    releases: set[str] = set()
    if not models_root.is_dir():
        return problems
    for name_dir in sorted(p for p in models_root.iterdir() if p.is_dir()):
        if name_dir.name.startswith("."):
            continue
        for rel in sorted(p for p in name_dir.iterdir() if p.is_dir()):
            if rel.name.startswith("."):
                continue
            where = f"{name_dir.name}/{rel.name}"
            releases.add(where)
            try:
                manifest = json.loads((rel / "manifest.json").read_bytes())["manifest"]
            except (OSError, ValueError, KeyError) as exc:
                problems.append(f"{where}: manifest unreadable: {exc}")
                continue
            for entry in manifest["files"]:
                path = rel / entry["name"]
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    problems.append(f"{where}/{entry['name']}: {exc.strerror}")
                    continue
                if (
                    len(data) != entry["size"]
                    or hashlib.sha256(data).hexdigest() != entry["sha256"]
                ):
                    problems.append(f"{where}/{entry['name']}: contents differ from the manifest")
    pointer = models_root / "active"
    if pointer.exists():
        try:
            ptr = json.loads(pointer.read_bytes())
            target = f"{ptr['name']}/{ptr['version']}"
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"active pointer unreadable: {exc}")
        else:
            if target not in releases:
                problems.append(f"active pointer names {target}, which is not installed")
    return problems


def read_pointer(models_root: Path) -> dict[str, Any] | None:
    """The store's ``active`` pointer document, or None when absent or unreadable."""
    try:
        return json.loads((models_root / "active").read_bytes())
    except (OSError, ValueError):
        return None


def active_release(models_root: Path) -> tuple[str, str] | None:
    """(name, version) the store's pointer names, or None."""
    ptr = read_pointer(models_root)
    return (ptr["name"], str(ptr["version"])) if ptr else None
