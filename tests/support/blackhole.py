"""A TCP proxy on loopback that can turn into a black hole (no RST, no FIN, no data).

:class:`BlackholeProxy` forwards every accepted connection to an upstream port. After
:meth:`BlackholeProxy.drop` it keeps every socket open but forwards nothing: bytes
from either side are read and discarded, so the client's writes succeed, nothing
comes back, and the connection looks alive until an application-level timeout (MQTT
keepalive) gives up. That is what a silently dead network path (a NAT timeout, a
pulled cable upstream of a switch) looks like to the device. New connections made
during the drop are accepted and then ignored the same way.
"""

from __future__ import annotations

import selectors
import socket
import threading

from tests.support.broker import HOST


class BlackholeProxy:
    """Forward ``127.0.0.1:port`` to ``upstream_port`` until :meth:`drop`.

    Args:
        upstream_port: the real server (e.g. mosquitto) on loopback.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._listener = socket.create_server((HOST, 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket | None] = {}
        self._dropped = threading.Event()
        self._stop = threading.Event()
        self.discarded = 0  # bytes swallowed during the drop
        self._thread = threading.Thread(target=self._run, name="blackhole-proxy", daemon=True)

    def start(self) -> BlackholeProxy:
        """Start forwarding."""
        self._thread.start()
        return self

    def drop(self) -> None:
        """Become a black hole: keep every connection open, forward nothing."""
        self._dropped.set()

    def stop(self) -> None:
        """Close everything (the clients then see their connection closed) and join."""
        self._stop.set()
        self._thread.join(5.0)
        for sock in list(self._peers):
            sock.close()
        self._listener.close()
        self._selector.close()

    def __enter__(self) -> BlackholeProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.1):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._forward(key.fileobj)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        upstream = None
        if not self._dropped.is_set():
            upstream = socket.create_connection((HOST, self.upstream_port), timeout=5)
            self._peers[upstream] = client
            self._selector.register(upstream, selectors.EVENT_READ, None)
        client.settimeout(5)  # recv only when readable; sendall bounded in time
        self._peers[client] = upstream
        self._selector.register(client, selectors.EVENT_READ, None)

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if self._dropped.is_set():
            self.discarded += len(data)  # swallowed; a closed side is left alone too
            if not data:
                self._selector.unregister(sock)
            return
        peer = self._peers.get(sock)
        if not data or peer is None:
            self._close_pair(sock)
            return
        try:
            peer.sendall(data)
        except OSError:
            self._close_pair(sock)

    def _close_pair(self, sock: socket.socket) -> None:
        for s in (sock, self._peers.pop(sock, None)):
            if s is None:
                continue
            self._peers.pop(s, None)
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
