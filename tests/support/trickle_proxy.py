"""A TCP proxy on loopback whose open connections can start trickling the server's bytes.

:class:`TrickleProxy` forwards every accepted connection to an upstream port. After
:meth:`TrickleProxy.trickle` the connections open at that moment pass on what the server
sends one byte per ``interval`` (everything arrives, in order, far too slowly); what the
client sends still goes through at once. Connections made later forward normally. That is
a congested or half-broken path (a saturated uplink, a middlebox stuck on one flow): the
link looks alive, bytes keep coming, no packet completes in time.
"""

from __future__ import annotations

import socket
import threading
import time

from tests.support.broker import HOST


class _Pair:
    """One client connection and its upstream, forwarded by two threads."""

    def __init__(self, client: socket.socket, upstream: socket.socket, stop: threading.Event):
        self.client, self.upstream, self._stop = client, upstream, stop
        self.trickle_s = 0.0
        self.threads = [
            threading.Thread(target=self._up, name="trickle-up", daemon=True),
            threading.Thread(target=self._down, name="trickle-down", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _up(self) -> None:
        self._pump(self.client, self.upstream)

    def _down(self) -> None:
        self._pump(self.upstream, self.client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                if dst is self.client and self.trickle_s:
                    for i in range(len(data)):
                        if self._stop.wait(self.trickle_s):
                            return
                        dst.sendall(data[i : i + 1])
                else:
                    dst.sendall(data)
            except OSError:
                break
        self.close()

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TrickleProxy:
    """Forward ``127.0.0.1:port`` to ``upstream_port``; see the module docstring."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="trickle-proxy", daemon=True)
        self.trickle_started = 0.0  # time.monotonic() of trickle()

    def __enter__(self) -> TrickleProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.close()
            for thread in pair.threads:
                thread.join(5.0)
            pair.client.close()
            pair.upstream.close()
        self._listener.close()

    def trickle(self, interval: float) -> None:
        """From now on, the open connections pass the server's bytes one per ``interval``."""
        self.trickle_started = time.monotonic()
        with self._lock:
            for pair in self._pairs:
                pair.trickle_s = interval

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append(_Pair(client, upstream, self._stop))
