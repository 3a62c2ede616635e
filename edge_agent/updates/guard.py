"""A watchdog for one HTTP attempt: deadlines, a minimum rate and cancel that hold.

A socket timeout bounds one ``recv`` only, so a server that trickles one byte a second
keeps a blocked reader alive forever, and a flag checked between reads is never seen.
:class:`TransferGuard` therefore watches the attempt from its own thread and, when the
attempt must end, shuts the connection's socket down; the reader's blocked ``recv``
returns at once and :meth:`TransferGuard.check` turns that into the real reason. A
blocked ``connect`` cannot be woken so: :meth:`TransferGuard.connect` connects without
blocking and checks the guard between polls, and resolves its name in a thread of its own.

An attempt ends when:

* the cancel event is set (within :data:`TICK`);
* the final deadline passes (the file's ``max_duration`` or the update's budget);
* the attempt's own wall-clock deadline passes (``attempt_timeout``);
* the TCP+TLS connect takes longer than ``connect_timeout``, or the status line and
  headers take longer than ``read_timeout`` after the request;
* fewer than ``min_rate_bytes`` body bytes arrive in any ``min_rate_window`` seconds.
"""

from __future__ import annotations

import collections
import errno
import http.client
import logging
import os
import selectors
import socket
import threading
import time
from enum import Enum
from typing import Callable, NamedTuple

from edge_agent.errors import ModelUpdateError
from edge_agent.redaction import mask_credentials
from edge_agent.updates.lookup import RESOLVER

logger = logging.getLogger(__name__)

TICK = 0.1  # seconds between checks: the latency of cancel and of every deadline


class Deadline(NamedTuple):
    """A monotonic instant and what it limits (for the failure message)."""

    at: float
    what: str


class Phase(Enum):
    """Where an attempt is; each phase has its own limit."""

    CONNECT = "connect"
    HEADERS = "headers"
    BODY = "body"


class GuardLimits(NamedTuple):
    """The limits of one attempt (from :class:`~edge_agent.updates.transport.DownloadSettings`)."""

    connect_timeout: float
    read_timeout: float
    attempt_timeout: float
    min_rate_bytes: int
    min_rate_window: float


class GuardFailure(ModelUpdateError):
    """Why the guard ended an attempt; ``retry`` says whether another attempt may succeed."""

    def __init__(self, reason: str, message: str, *, retry: bool):
        super().__init__(reason, message)
        self.retry = retry


class TransferGuard:
    """Watches one attempt from its own thread (a context manager; the thread is joined).

    Args:
        url: the URL (redacted in messages).
        limits: the attempt's limits.
        cancel: set it to end the attempt with ``cancelled``.
        final: the deadline after which no attempt may run (not retried).
        clock: monotonic clock.
    """

    def __init__(
        self,
        url: str,
        limits: GuardLimits,
        cancel: threading.Event,
        final: Deadline,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._url = mask_credentials(url)
        self._limits = limits
        self._cancel = cancel
        self._final = final
        self._clock = clock
        self._lock = threading.Lock()  # guards every field below
        self._done = threading.Event()
        self._attempt_end = clock() + limits.attempt_timeout
        self._phase = Phase.CONNECT
        self._phase_start = clock()
        self._conn: http.client.HTTPConnection | None = None
        # The request's socket, kept: for an HTTP/1.0 answer http.client hands it to the
        # response and sets conn.sock to None, but the body is still read from it.
        self._sock: socket.socket | None = None
        self._failure: GuardFailure | None = None
        self._bytes = 0
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._thread = threading.Thread(target=self._watch, name="download-guard", daemon=True)

    def __enter__(self) -> TransferGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(2.0)
        if self._thread.is_alive():  # never expected: the loop wakes every TICK
            logger.error("download %s: guard thread did not stop", self._url)

    # ------------------------------------------------------------ reader side
    def connecting(self, conn: http.client.HTTPConnection) -> None:
        """A new connection (first hop or a redirect) is about to connect."""
        with self._lock:
            self._conn = conn
            self._sock = None
            self._enter(Phase.CONNECT)
        self.check()

    def connect(
        self,
        address: tuple[str, int],
        timeout: float | None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """``socket.create_connection`` whose connect ends as soon as the attempt must end.

        A blocked ``connect`` (a host that went away drops the SYNs) is woken by neither
        ``shutdown`` nor a flag, so each address is connected without blocking and
        polled every :data:`TICK`: cancel and every deadline hold while it hangs, and
        while the name is resolved (:mod:`~edge_agent.updates.lookup`).

        Raises:
            GuardFailure: the attempt was ended meanwhile.
            OSError: no address could be connected.
        """
        host, port = address
        last: OSError | None = None
        for family, kind, proto, _, where in RESOLVER.resolve(host, port, self.check, TICK):
            sock = socket.socket(family, kind, proto)
            try:
                if source_address:
                    sock.bind(source_address)
                self._connect_polled(sock, where)
                sock.settimeout(timeout)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
            except BaseException:
                sock.close()
                raise
        raise last or OSError(f"no address for {host}")

    def _connect_polled(self, sock: socket.socket, where: tuple) -> None:  # type: ignore[type-arg]
        """Connect ``sock`` without blocking, checking the guard every TICK."""
        sock.setblocking(False)
        code = sock.connect_ex(where)
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_WRITE)
            while code in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
                self.check()
                if sel.select(TICK):
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))

    def sent(self) -> None:
        """The request is sent: the status line and headers are due."""
        with self._lock:
            self._sock = getattr(self._conn, "sock", None)
            self._enter(Phase.HEADERS)
        self.check()

    def body(self) -> None:
        """The headers are in: the body's rate is watched from now on."""
        with self._lock:
            self._enter(Phase.BODY)
            self._samples.append((self._clock(), self._bytes))
        self.check()

    def count(self, nbytes: int) -> None:
        """Body bytes received; raises if the attempt was ended meanwhile."""
        with self._lock:
            self._bytes += nbytes
        self.check()

    def check(self) -> None:
        """Raise the failure that ended the attempt, if any (call after any read error)."""
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise failure

    # ------------------------------------------------------------ guard thread
    def _enter(self, phase: Phase) -> None:
        """Switch phase (lock held)."""
        self._phase = phase
        self._phase_start = self._clock()

    def _watch(self) -> None:
        """Check the limits every TICK until the attempt ends; trip at the first breach."""
        while not self._done.is_set():
            with self._lock:
                failure = self._verdict(self._clock())
                if failure is not None:
                    self._failure = failure
                sock = self._sock or getattr(self._conn, "sock", None)
            if failure is not None:
                _shutdown(sock)
                return
            # The end of the attempt wakes this wait at once (the thread is joined right
            # after); a cancel is seen within TICK.
            self._done.wait(TICK)

    def _verdict(self, now: float) -> GuardFailure | None:
        """The failure to end the attempt with now, or None (lock held)."""
        lim = self._limits
        if self._cancel.is_set():
            return GuardFailure("cancelled", f"download of {self._url} cancelled", retry=False)
        if now >= self._final.at:
            return GuardFailure("timeout", f"{self._url}: {self._final.what}", retry=False)
        if now >= self._attempt_end:
            return self._timeout(f"attempt exceeded {lim.attempt_timeout:g}s")
        waited = now - self._phase_start
        if self._phase is Phase.CONNECT and waited >= lim.connect_timeout:
            return self._timeout(f"no connection within {lim.connect_timeout:g}s")
        if self._phase is Phase.HEADERS and waited >= lim.read_timeout:
            return self._timeout(f"no complete response headers within {lim.read_timeout:g}s")
        if self._phase is Phase.BODY and lim.min_rate_bytes > 0:
            return self._rate(now)
        return None

    def _rate(self, now: float) -> GuardFailure | None:
        """Too slow when fewer than min_rate_bytes arrived in the last window."""
        lim = self._limits
        self._samples.append((now, self._bytes))
        # Keep the newest sample at or before now - window as the window's start.
        while len(self._samples) > 1 and self._samples[1][0] <= now - lim.min_rate_window:
            self._samples.popleft()
        start_t, start_bytes = self._samples[0]
        if now - start_t < lim.min_rate_window:
            return None
        got = self._bytes - start_bytes
        if got >= lim.min_rate_bytes:
            return None
        return self._timeout(
            f"too slow: {got} bytes in {now - start_t:.0f}s "
            f"(minimum {lim.min_rate_bytes} in {lim.min_rate_window:g}s)"
        )

    def _timeout(self, what: str) -> GuardFailure:
        """A retryable ``timeout`` (the next attempt resumes where this one stopped)."""
        return GuardFailure("timeout", f"{self._url}: {what}", retry=True)


def _shutdown(sock: socket.socket | None) -> None:
    """Wake a reader blocked on ``sock`` without closing the descriptor.

    ``shutdown`` (unlike ``close``) makes a blocked ``recv`` return at once; the plain
    socket method is called so a TLS socket's state is left for the reader to discard.
    The reader closes the connection itself, so its descriptor is never reused under it.
    """
    if sock is None:
        return  # still resolving or connecting: connect_timeout bounds it, check() reports
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected
