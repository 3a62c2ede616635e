"""HTTP(S) plumbing for downloads: connections, redirects, retries, status mapping.

Only the standard library: ``http.client`` with the default ``ssl`` context (plus an
optional CA file). Redirects are followed by hand so each hop is re-checked against
the URL policy. Failures are :class:`ModelUpdateError` (reasons ``http_error``,
``tls_error``, ``timeout``, ``truncated``, ``too_large``, ``cancelled``); the transient
ones are retried with exponential backoff.
"""

from __future__ import annotations

import http.client
import logging
import random
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, TypeVar
from urllib.parse import SplitResult, urljoin

from edge_agent import __version__
from edge_agent.errors import ModelUpdateError
from edge_agent.updates.urls import basic_auth, check_url, redact_url

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_RETRY_STATUS = (408, 425, 429, 500, 502, 503, 504)


@dataclass(frozen=True)
class DownloadSettings:
    """How downloads behave (the ``[updates]`` config maps onto this).

    Attributes:
        allowed_hosts: host names (``*.example.com`` for subdomains) artifacts may
            come from; empty allows any host.
        allow_http: permit plain ``http://`` (lab networks only).
        ca_file: extra CA bundle (PEM) trusted in addition to the system store.
        connect_timeout, read_timeout: seconds for the TCP/TLS connect and per read.
        max_duration: seconds one file may take in total, retries included.
        retries: extra attempts after a transient failure.
        backoff_initial, backoff_max: exponential backoff bounds in seconds.
        progress_interval: minimum seconds between progress callbacks.
        max_redirects: redirect hops followed.
    """

    allowed_hosts: tuple[str, ...] = ()
    allow_http: bool = False
    ca_file: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_duration: float = 3600.0
    retries: int = 4
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    progress_interval: float = 0.5
    max_redirects: int = 5


class Failure(ModelUpdateError):
    """A download failure that knows whether another attempt may succeed."""

    def __init__(self, reason: str, message: str, *, retry: bool = False, after: float = 0):
        super().__init__(reason, message)
        self.retry = retry
        self.retry_after = after


class Transport:
    """Opens GET requests under one :class:`DownloadSettings` policy.

    Args:
        settings: the policy.
        cancel: when set, waits and downloads stop with ``cancelled``.
    """

    def __init__(self, settings: DownloadSettings, cancel: threading.Event):
        self.settings = settings
        self.cancel = cancel
        self._ssl = ssl.create_default_context()
        if settings.ca_file:
            self._ssl.load_verify_locations(cafile=settings.ca_file)
        self._user_agent = f"edge-agent/{__version__}"

    def retrying(self, url: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` with exponential backoff on transient failures."""
        delay = self.settings.backoff_initial
        for n in range(self.settings.retries + 1):
            if self.cancel.is_set():
                raise ModelUpdateError("cancelled", f"download of {redact_url(url)} cancelled")
            try:
                return attempt()
            except Failure as exc:
                if not exc.retry or n == self.settings.retries:
                    raise
                wait = max(exc.retry_after, delay) if exc.retry_after else delay
                wait = min(wait, self.settings.backoff_max) * random.uniform(0.8, 1.0)
                logger.warning(
                    "download %s: %s; retry %d/%d in %.1fs",
                    redact_url(url),
                    exc,
                    n + 1,
                    self.settings.retries,
                    wait,
                )
                if self.cancel.wait(wait):
                    raise ModelUpdateError(
                        "cancelled", f"download of {redact_url(url)} cancelled"
                    ) from exc
                delay = min(delay * 2, self.settings.backoff_max)
        raise AssertionError("unreachable")

    def _connect(self, parts: SplitResult) -> http.client.HTTPConnection:
        """Open a connection: connect timeout for TCP+TLS, then the read timeout."""
        s = self.settings
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=s.connect_timeout, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=s.connect_timeout)
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        conn.sock.settimeout(s.read_timeout)
        return conn

    def open(
        self, url: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a GET, following redirects with every hop re-checked."""
        s = self.settings
        for _ in range(s.max_redirects + 1):
            parts = check_url(url, allowed_hosts=s.allowed_hosts, allow_http=s.allow_http)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn = None
            try:
                conn = self._connect(parts)
                sent = {"User-Agent": self._user_agent, **headers}
                auth = basic_auth(parts)
                if auth:  # per hop: a redirect to another host does not get the password
                    sent["Authorization"] = auth
                conn.request("GET", target, headers=sent)
                resp = conn.getresponse()
            except ssl.SSLError as exc:
                close_quietly(conn)
                raise Failure("tls_error", f"{parts.hostname}: TLS failed: {exc}") from exc
            except (socket.timeout, TimeoutError) as exc:
                close_quietly(conn)
                raise Failure(
                    "timeout", f"{parts.hostname}: no answer in time", retry=True
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                close_quietly(conn)
                raise Failure(
                    "http_error", f"{parts.hostname}: connection failed: {exc}", retry=True
                ) from exc
            if resp.status in _REDIRECTS and resp.getheader("Location"):
                url = urljoin(url, resp.getheader("Location", ""))
                close_quietly(conn)
                continue
            return conn, resp
        raise Failure("http_error", f"more than {s.max_redirects} redirects")

    def status_error(self, url: str, resp: http.client.HTTPResponse) -> Failure:
        """The failure for an unexpected HTTP status (transient ones are retried)."""
        after = resp.getheader("Retry-After", "")
        retry_after = float(after) if after.isdigit() else 0.0
        return Failure(
            "http_error",
            f"{redact_url(url)}: HTTP {resp.status} {resp.reason}",
            retry=resp.status in _RETRY_STATUS,
            after=retry_after,
        )


def read_chunks(resp: http.client.HTTPResponse, url: str) -> Iterator[bytes]:
    """Body chunks; a reset or incomplete chunked body counts as truncation."""
    while True:
        try:
            chunk = resp.read(CHUNK)
        except (socket.timeout, TimeoutError) as exc:
            raise Failure("timeout", f"{redact_url(url)}: read timed out", retry=True) from exc
        except (http.client.IncompleteRead, ConnectionError, http.client.HTTPException) as exc:
            raise Failure(
                "truncated", f"{redact_url(url)}: connection lost: {exc!r:.80}", retry=True
            ) from exc
        except OSError as exc:
            raise Failure(
                "truncated", f"{redact_url(url)}: read failed: {exc}", retry=True
            ) from exc
        if not chunk:
            return
        yield chunk


def content_length(resp: http.client.HTTPResponse) -> int | None:
    """Content-Length as int, None when absent or garbage."""
    value = resp.getheader("Content-Length", "")
    return int(value) if value.strip().isdigit() else None


def close_quietly(conn: http.client.HTTPConnection | None) -> None:
    """Close a connection, ignoring errors (it may be half dead)."""
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass
