"""A real loopback HTTP(S) server with scripted misbehaviour, for the update tests.

Each path gets a :class:`Route`: the body plus what to do wrong (fail N times, cut the
connection after some bytes, stall, ignore or botch ``Range``, omit the length,
redirect). Every request is recorded with its headers.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-")


@dataclass
class Route:
    """What the server answers for one path."""

    body: bytes = b""
    status: int = 200
    fail_times: int = 0  # the first N requests get fail_status
    fail_status: int = 500
    cut_after: int | None = None  # close after this many body bytes...
    cut_times: int = 0  # ...on the first N requests
    stall: float = 0.0  # seconds to wait before answering
    ignore_range: bool = False
    bad_range: bool = False  # 206 with a start other than requested
    no_length: bool = False
    redirect: str | None = None
    throttle: float = 0.0  # seconds between 8 KiB chunks
    etag: str | None = None
    trickle: float = 0.0  # seconds between single body bytes
    trickle_head: float = 0.0  # seconds between single bytes of the status line and headers
    hits: int = field(default=0)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        with srv.lock:
            route = srv.routes.get(self.path.split("?")[0])
            srv.requests.append((self.path, dict(self.headers)))
            if route is not None:
                route.hits += 1
                hit = route.hits
        if route is None:
            self.send_error(404)
            return
        if route.stall and srv.stopping.wait(route.stall):
            return
        if route.trickle_head:
            head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(route.body)}\r\n\r\n".encode()
            if self._trickle(head, route.trickle_head):
                self.wfile.write(route.body)
            return
        if route.redirect:
            self.send_response(302)
            self.send_header("Location", route.redirect)
            self.end_headers()
            return
        if hit <= route.fail_times:
            self.send_error(route.fail_status)
            return
        if route.status != 200:
            self.send_error(route.status)
            return
        if route.etag and self.headers.get("If-None-Match") == route.etag:
            self.send_response(304)
            self.end_headers()
            return
        body, start = route.body, 0
        m = _RANGE.fullmatch(self.headers.get("Range", ""))
        if m and not route.ignore_range:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            shown = start + 1 if route.bad_range else start
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {shown}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if route.etag:
            self.send_header("ETag", route.etag)
        if not route.no_length:
            self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if route.cut_after is not None and hit <= route.fail_times + route.cut_times:
            payload = payload[: route.cut_after]
        if route.trickle:
            self._trickle(payload, route.trickle)
            return
        for i in range(0, len(payload), 8192):
            if route.throttle and srv.stopping.wait(route.throttle):
                return
            try:
                self.wfile.write(payload[i : i + 8192])
            except OSError:
                return

    def _trickle(self, data: bytes, interval: float) -> bool:
        """Send one byte every ``interval`` s; False once the client or server is gone."""
        for i in range(len(data)):
            if self.server.stopping.wait(interval):
                return False
            try:
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
            except OSError:
                return False
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FileServer:
    """Loopback server; use as a context manager. ``url(path)`` gives a URL."""

    def __init__(self, tls: tuple[str, str] | None = None):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.routes = {}
        self._server.requests = []
        self._server.lock = threading.Lock()
        self._server.stopping = threading.Event()
        self.scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    @property
    def routes(self) -> dict[str, Route]:
        return self._server.routes

    @property
    def requests(self) -> list[tuple[str, dict]]:
        return self._server.requests

    def add(self, path: str, route: Route | bytes) -> str:
        """Serve a route at path; returns its URL."""
        self.routes[path] = route if isinstance(route, Route) else Route(body=route)
        return self.url(path)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def make_tls_files(directory: Path) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost.

    Returns:
        (ca_pem_path, cert_pem_path, key_pem_path).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-agent test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # Key usage and identifiers: Python 3.13's default context verifies X509_STRICT.
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tuple(str(p) for p in paths)
