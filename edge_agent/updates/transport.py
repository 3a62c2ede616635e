"""HTTP(S) plumbing for downloads: connections, redirects, retries, status mapping.

Only the standard library: ``http.client`` with the default ``ssl`` context (plus an
optional CA file). Redirects are followed by hand so each hop is re-checked against
the URL policy. Failures are :class:`ModelUpdateError` (reasons ``http_error``,
``tls_error``, ``timeout``, ``truncated``, ``too_large``, ``cancelled``); the transient
ones are retried with exponential backoff, never past the final deadline.

Every attempt runs under a :class:`~edge_agent.updates.guard.TransferGuard`: deadlines,
the minimum rate and cancel hold even against a server that trickles bytes.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, TypeVar
from urllib.parse import SplitResult, urljoin

from edge_agent import __version__
from edge_agent.backoff import Backoff
from edge_agent.errors import ModelUpdateError
from edge_agent.redaction import mask_credentials
from edge_agent.updates.guard import Deadline, GuardFailure, GuardLimits, TransferGuard
from edge_agent.updates.urls import basic_auth, check_url

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
        connect_timeout: seconds for the TCP+TLS connect, however the bytes trickle.
        read_timeout: seconds one read may wait for a byte, and seconds the status
            line and headers may take after the request.
        attempt_timeout: wall-clock seconds one attempt may take (a retry resumes).
        max_duration: seconds one file may take in total, retries included.
        update_timeout: seconds one update may take for all its fetches (manifest and
            files, retries included), when run inside :meth:`Downloader.budget`.
        min_rate_bytes, min_rate_window: an attempt fails when fewer than
            ``min_rate_bytes`` body bytes arrive in ``min_rate_window`` seconds
            (0 bytes: no minimum rate).
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
    attempt_timeout: float = 900.0
    update_timeout: float = 3600.0
    min_rate_bytes: int = 1024
    min_rate_window: float = 60.0
    retries: int = 4
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    progress_interval: float = 0.5
    max_redirects: int = 5

    def limits(self) -> GuardLimits:
        """The per-attempt limits a :class:`TransferGuard` enforces."""
        return GuardLimits(
            self.connect_timeout,
            self.read_timeout,
            self.attempt_timeout,
            self.min_rate_bytes,
            self.min_rate_window,
        )


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

    def guard(self, url: str, final: Deadline) -> TransferGuard:
        """The watchdog for one attempt (use it as a context manager)."""
        return TransferGuard(url, self.settings.limits(), self.cancel, final)

    def retrying(self, url: str, attempt: Callable[[], T], final: Deadline) -> T:
        """Run ``attempt`` with exponential backoff on transient failures, until ``final``."""
        # Jittered, so a fleet retrying the same release server does not stampede.
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max, jitter=0.2)
        for n in range(self.settings.retries + 1):
            if self.cancel.is_set():
                raise ModelUpdateError(
                    "cancelled", f"download of {mask_credentials(url)} cancelled"
                )
            if time.monotonic() >= final.at:
                raise Failure("timeout", f"{mask_credentials(url)}: {final.what}")
            try:
                return attempt()
            except (Failure, GuardFailure) as exc:
                if not exc.retry or n == self.settings.retries:
                    raise
                after = getattr(exc, "retry_after", 0.0)
                wait = min(max(after, backoff.next()), self.settings.backoff_max)
                # Never sleep past the final deadline: the next loop then reports it.
                wait = max(0.0, min(wait, final.at - time.monotonic()))
                logger.warning(
                    "download %s: %s; retry %d/%d in %.1fs",
                    mask_credentials(url),
                    exc,
                    n + 1,
                    self.settings.retries,
                    wait,
                )
                if self.cancel.wait(wait):
                    raise ModelUpdateError(
                        "cancelled", f"download of {mask_credentials(url)} cancelled"
                    ) from exc
        raise AssertionError("unreachable")

    def _connect(self, parts: SplitResult, guard: TransferGuard) -> http.client.HTTPConnection:
        """Open a connection under the guard; then each read waits at most read_timeout."""
        s = self.settings
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=s.connect_timeout, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=s.connect_timeout)
        # http.client's hook for opening the socket: the guard's connect can be cut short.
        conn._create_connection = guard.connect  # type: ignore[attr-defined]
        try:
            guard.connecting(conn)
            conn.connect()
        except BaseException:
            conn.close()
            raise
        conn.sock.settimeout(s.read_timeout)
        return conn

    def open(
        self, url: str, headers: dict[str, str], guard: TransferGuard
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a GET under ``guard``, following redirects with every hop re-checked."""
        s = self.settings
        for _ in range(s.max_redirects + 1):
            parts = check_url(url, allowed_hosts=s.allowed_hosts, allow_http=s.allow_http)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn = None
            try:
                conn = self._connect(parts, guard)
                sent = {"User-Agent": self._user_agent, **headers}
                auth = basic_auth(parts)
                if auth:  # per hop: a redirect to another host does not get the password
                    sent["Authorization"] = auth
                conn.request("GET", target, headers=sent)
                guard.sent()
                resp = conn.getresponse()
                guard.body()
            except GuardFailure:
                close_quietly(conn)
                raise
            except ssl.SSLError as exc:
                close_quietly(conn)
                guard.check()  # a guard shutdown mid-handshake reads as a TLS error
                raise Failure("tls_error", f"{parts.hostname}: TLS failed: {exc}") from exc
            except (socket.timeout, TimeoutError) as exc:
                close_quietly(conn)
                guard.check()
                raise Failure(
                    "timeout", f"{parts.hostname}: no answer in time", retry=True
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                close_quietly(conn)
                guard.check()
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
            f"{mask_credentials(url)}: HTTP {resp.status} {resp.reason}",
            retry=resp.status in _RETRY_STATUS,
            after=retry_after,
        )


def read_chunks(resp: http.client.HTTPResponse, url: str, guard: TransferGuard) -> Iterator[bytes]:
    """Body chunks as they arrive (one ``recv`` each, so the guard sees every byte).

    A reset or incomplete body counts as truncation; an attempt the guard ended raises
    the guard's reason instead (its shutdown reads like an early end of the body).
    """
    while True:
        try:
            chunk = resp.read1(CHUNK)
        except (socket.timeout, TimeoutError) as exc:
            guard.check()
            raise Failure(
                "timeout", f"{mask_credentials(url)}: read timed out", retry=True
            ) from exc
        except (http.client.IncompleteRead, ConnectionError, http.client.HTTPException) as exc:
            guard.check()
            raise Failure(
                "truncated", f"{mask_credentials(url)}: connection lost: {exc!r:.80}", retry=True
            ) from exc
        except OSError as exc:
            guard.check()
            raise Failure(
                "truncated", f"{mask_credentials(url)}: read failed: {exc}", retry=True
            ) from exc
        if not chunk:
            guard.check()
            return
        guard.count(len(chunk))
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
