"""A service manager's end of sd_notify for tests: a bound unix datagram socket.

Hand ``notify_socket.path`` to a daemon as ``$NOTIFY_SOCKET`` (with ``WATCHDOG_USEC``),
as systemd does for ``Type=notify``, and read back what it sent, with arrival times.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

WATCHDOG_USEC = 1_000_000  # WatchdogSec=1: the daemon pings every 0.5 s


class NotifySocket:
    """A bound AF_UNIX datagram socket recording (monotonic time, field) per line."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.fields: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-socket", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Receive datagrams until stopped; each line of one is a KEY=VALUE field."""
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            now = time.monotonic()
            with self._lock:
                self.fields.extend((now, line) for line in data.decode().splitlines())

    def times(self, field: str) -> list[float]:
        """When ``field`` (exact, e.g. ``READY=1``) arrived."""
        with self._lock:
            return [t for t, f in self.fields if f == field]

    def lines(self, prefix: str) -> list[str]:
        """The fields starting with ``prefix``, in order."""
        with self._lock:
            return [f for _, f in self.fields if f.startswith(prefix)]

    @property
    def env(self) -> dict[str, str]:
        """The environment systemd gives a ``Type=notify`` service with ``WatchdogSec=1``."""
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    """The socket, in a short directory: AF_UNIX paths are limited to 107 bytes."""
    directory = tmp_path if len(str(tmp_path)) < 80 else Path(tempfile.mkdtemp(prefix="ea-"))
    sock = NotifySocket(directory / "notify.sock")
    yield sock
    sock.close()
    sock.path.unlink(missing_ok=True)
