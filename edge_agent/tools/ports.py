"""Loopback ports for the brokers the tools start (benchmarks, the fleet lab, the tests)."""

from __future__ import annotations

import socket
import time
from typing import Callable

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> None:
    """Wait until host:port accepts TCP connections.

    Raises:
        RuntimeError: ``alive()`` turned False (the server exited while starting).
        TimeoutError: not listening after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"broker on {host}:{port} exited during startup")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # bounded by the deadline above
    raise TimeoutError(f"broker on {host}:{port} not listening after {timeout}s")
