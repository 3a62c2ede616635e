"""A one-shot HTTP(S) server for lab rollouts: serves one release's files, nothing else.

``edge-agent model push --serve HOST:PORT`` starts it so devices can fetch the
artifacts straight from the operator's machine. It answers GET/HEAD for exactly the
release's file names and ``manifest.json`` (404 for anything else, no directory
listing, no path handling at all), supports single ``Range`` requests so devices can
resume, and stops when the push ends or after its timeout. Plain HTTP requires the
devices to set ``updates.allow_http``; give a certificate to serve HTTPS instead.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import socket
import ssl
import sys
import threading
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.manifest import validate_file_name

logger = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_CHUNK = 64 * 1024
# Seconds one client may stay silent (TLS handshake, request, or reading the body): a
# device that vanished mid-transfer must not hold its thread for the whole push.
CLIENT_TIMEOUT = 60.0


def outbound_ip(peer_host: str, peer_port: int = 1883) -> str:
    """The local address used to reach ``peer_host`` (what devices can reach us on).

    No packet is sent: connecting a UDP socket only selects the route.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((peer_host, peer_port))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class _Handler(BaseHTTPRequestHandler):
    """Serves the allowlisted files of the owning LabServer."""

    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT

    def setup(self) -> None:
        """Apply the timeout, then the TLS handshake: here, in this client's thread."""
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
        """HEAD: headers only."""
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        """GET, with single-range support."""
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        """Answer for one of the allowed names, else 404."""
        name = self.path.split("?", 1)[0].lstrip("/")
        path = self.server.files.get(name)
        if path is None:
            self.send_error(404)
            return
        stat = path.stat()
        size = stat.st_size
        start, end = 0, size - 1
        status = 200
        m = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"')
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                block = f.read(min(_CHUNK, left))
                if not block:
                    break
                self.wfile.write(block)
                left -= len(block)
        if start == 0 and left == 0:
            self.server.count(name)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Route http.server's access log to logging."""
        logger.debug("lab server: %s %s", self.client_address[0], format % args)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows the allowed files and counts full downloads."""

    daemon_threads = True
    files: dict[str, Path]
    served: Counter[str]
    lock: threading.Lock

    def count(self, name: str) -> None:
        """Record a complete download of a file."""
        with self.lock:
            self.served[name] += 1

    def handle_error(self, request: object, client_address: tuple) -> None:
        """A client that failed (timed out, broke the handshake): logged, not printed."""
        why = sys.exc_info()[1]  # called from socketserver's exception handler
        logger.debug("lab server: %s: connection failed: %r", client_address[0], why)


class LabServer:
    """Serve a release directory's files over HTTP(S) for the duration of a push.

    Args:
        release_dir: the ``pack`` output.
        names: the file names to serve (``manifest.json`` is always added).
        host, port: bind address (port 0 picks a free port).
        advertise_host: the host devices use in URLs (default: the bind host, or
            for a wildcard bind, this machine's outbound address towards ``peer``).
        peer: a host the devices also reach (the broker), to pick the address.
        certfile, keyfile: serve HTTPS with this certificate.
        timeout: stop serving after this many seconds whatever happens.
    """

    def __init__(
        self,
        release_dir: str | os.PathLike[str],
        names: Iterable[str],
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        advertise_host: str | None = None,
        peer: str = "127.0.0.1",
        certfile: str | None = None,
        keyfile: str | None = None,
        timeout: float = 3600.0,
    ):
        root = Path(release_dir)
        files = {validate_file_name(n): root / n for n in names}
        files["manifest.json"] = root / "manifest.json"
        for path in files.values():
            if not path.is_file():
                raise FileNotFoundError(f"lab server: {path} missing")
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as exc:  # port taken, address not local...: one line, not a trace
            raise ModelUpdateError(
                "serve_failed", f"lab server cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        self._server.files = files
        self._server.served = Counter()
        self._server.lock = threading.Lock()
        self.scheme = "http"
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            # Handshakes in the clients' threads (_Handler.setup), not in accept(): one
            # client that connects and says nothing must not stall every other one.
            self._server.socket = ctx.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        wildcard = host in ("", "0.0.0.0", "::")
        self.host = advertise_host or (outbound_ip(peer) if wildcard else host)
        self.port = self._server.server_address[1]
        self._timeout = timeout
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    @property
    def url(self) -> str:
        """Base URL of the release (ends with ``/``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    def served(self, name: str) -> int:
        """How many complete downloads of a file were served."""
        with self._server.lock:
            return self._server.served[name]

    def start(self) -> LabServer:
        """Start serving in a background thread (stopped by :meth:`stop` or the timeout)."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="lab-server"
        )
        self._thread.daemon = True
        self._thread.start()
        self._timer = threading.Timer(self._timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()
        logger.info("lab server: serving %d files at %s", len(self._server.files), self.url)
        return self

    def _expire(self) -> None:
        """Timer callback: the push overran; stop serving."""
        logger.warning("lab server: timeout after %.0fs; stopping", self._timeout)
        self._server.shutdown()

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not None and self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        self._thread = None

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
