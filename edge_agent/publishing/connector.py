"""Opening a broker connection off the publisher thread, under one deadline.

paho's ``connect()`` resolves the broker's name, connects TCP, does the TLS (and
websockets) handshake and sends CONNECT synchronously, each step with its own timeout or
none (``getaddrinfo`` with two dead name servers takes ~20 s; a TLS endpoint that
accepts TCP and says nothing holds the handshake). Run in the publisher thread, that
would hold results only in memory beyond ``max_unacked_s`` and make ``stop()`` miss its
deadline. So each attempt runs in a :class:`Connector` thread, and the publisher thread
stays free to spool, renew the loss ledger and stop:

* the connector resolves the name and connects TCP itself, then hands paho the connected
  socket (paho still gets the host name: TLS SNI, certificate host name check and the
  websockets ``Host`` header are paho's own, unchanged);
* :class:`Dialer` (owned by the publisher thread) gives the whole attempt one deadline,
  ``mqtt.connect_timeout``: past it the attempt is abandoned and its socket shut down,
  which ends a blocked connect or handshake at once, however slowly bytes trickle;
* a thread stuck in ``getaddrinfo`` cannot be interrupted: it is a daemon thread, its
  late result is discarded, and at stop it is given up after a short timed join, with a
  log line. At most :data:`MAX_STUCK` of them per broker are left behind: while that many
  still resolve, no new attempt at that broker starts (a lookup that never returns would
  otherwise add a thread every backoff interval, for as long as the name servers are
  dead); the next of ``mqtt.hosts`` is tried instead, and with one broker the first
  lookup to return wakes the publisher for the next attempt.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from edge_agent.publishing.connection import Connection
from edge_agent.publishing.reconnect import Reconnects
from edge_agent.publishing.waker import Waker

logger = logging.getLogger(__name__)

JOIN_S = 1.0  # at stop, how long connectors (shut down, or stuck resolving) are waited for
MAX_STUCK = 2  # abandoned attempts still alive (stuck resolving) before no new one starts


class Outcome(NamedTuple):
    """How an attempt ended: the opened connection, or why there is none."""

    conn: Connection | None
    error: str


class Connector:
    """One connection attempt in its own daemon thread; see the module docstring.

    Args:
        conn: the connection to open (its paho client is not touched by the publisher
            thread until :meth:`poll` hands it over).
        timeout: seconds for name resolution, TCP, TLS and sending CONNECT together.
        on_done: called from the connector thread when it ends (wakes the publisher).
    """

    def __init__(self, conn: Connection, timeout: float, on_done: Callable[[], None]):
        self.conn = conn
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.stage = "resolving the broker's name"
        self._on_done = on_done
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._finished = False  # ended and not abandoned: poll() hands the outcome over
        self._error = ""
        self._handle: socket.socket | None = None  # a dup of the TCP socket, to shut it down
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt-connect-{conn.where}", daemon=True
        )

    def start(self) -> Connector:
        """Start the attempt's thread."""
        self._thread.start()
        return self

    def poll(self, now: float) -> Outcome | None:
        """The outcome once the attempt ended; None while it runs within its deadline.

        Past the deadline the attempt is abandoned (:meth:`abandon`) and reported as a
        failure naming the step it was stuck in.
        """
        with self._lock:
            if not self._finished and now >= self.deadline:
                self._abandon_locked()
                stage = self.stage
                return Outcome(None, f"no connection within {self.timeout:.1f}s ({stage})")
            if not self._finished:
                return None
            return Outcome(None if self._error else self.conn, self._error)

    def abandon(self) -> None:
        """Stop the attempt: its socket is shut down and whatever it ends with discarded.

        Does nothing once :meth:`poll` handed over an outcome.
        """
        with self._lock:
            if not self._finished:
                self._abandon_locked()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the thread; True if it ended."""
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """True while the thread runs (an abandoned one may still be resolving)."""
        return self._thread.is_alive()

    def _abandon_locked(self) -> None:
        """Under the lock: mark abandoned and unblock a connect or handshake in progress."""
        self._stop.set()
        if self._handle is not None:
            try:
                # shutdown acts on the connection, not the descriptor: it ends a blocked
                # connect() or recv() in the connector thread, also after paho wrapped the
                # socket in TLS (which detached the original socket object).
                self._handle.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected yet or already closed: the socket timeout bounds it

    def _run(self) -> None:
        """Thread body: resolve, connect, hand the socket to paho; then report or discard."""
        error = ""
        try:
            self.conn.open(self._dial())
        except (OSError, ValueError) as exc:  # ssl errors are OSError, CertificateError ValueError
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # never let the attempt end without a word
            logger.exception("mqtt %s: error while connecting", self.conn.where)
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            discard = self._stop.is_set()
            self._finished = not discard
            self._error = error or ("abandoned" if discard else "")
            if self._handle is not None:
                self._handle.close()
                self._handle = None
        if discard:
            # Abandoned (deadline or stop): nobody will use this connection.
            self.conn.close(clean=False)
            logger.debug("mqtt %s: abandoned attempt ended (%s)", self.conn.where, error)
        self._on_done()

    def _dial(self) -> socket.socket:
        """Resolve the broker and connect TCP to its first address that answers."""
        host, port = self.conn.broker
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        self.stage = "connecting TCP"
        error: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _name, address in infos:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                break
            sock = socket.socket(family, kind, proto)
            with self._lock:
                if self._stop.is_set():
                    sock.close()
                    break
                self._handle = sock.dup()
            sock.settimeout(remaining)
            try:
                sock.connect(address)
            except OSError as exc:
                error = exc
                sock.close()
                continue
            self.stage = "TLS handshake and CONNECT" if self.conn.tls else "sending CONNECT"
            return sock
        if self._stop.is_set():
            raise ConnectionAbortedError(f"connecting to {host}:{port} abandoned")
        raise error


class Dialer:
    """The publisher's connection attempts: at most one running, abandoned ones reaped.

    Owned by the publisher thread (no lock). Args:
        reconnects: when the next attempt is due, and where failures are counted.
        waker: the publisher's waker (the connector wakes it when it ends).
        timeout: ``mqtt.connect_timeout``, the deadline of each attempt.
        where: the brokers, for log lines.
    """

    def __init__(self, reconnects: Reconnects, waker: Waker, timeout: float, where: str):
        self._reconnects, self._waker = reconnects, waker
        self._timeout, self._where = timeout, where
        self._attempt: Connector | None = None
        self._abandoned: list[Connector] = []
        self._held_back = False  # no attempt starts while MAX_STUCK lookups hang (logged once)

    @property
    def connecting(self) -> bool:
        """True while an attempt runs."""
        return self._attempt is not None

    def step(self, make: Callable[[], Connection]) -> Connection | None:
        """Offline: start an attempt when due, wait (at most 1 s, or until woken) for it.

        Returns:
            The opened connection (its CONNACK then arrives through
            :meth:`Connection.step`), or None while there is none.
        """
        self._abandoned = [c for c in self._abandoned if c.alive]
        attempt = self._attempt
        if attempt is None:
            wait = self._reconnects.wait()
            if wait > 0:
                self._waker.wait(min(wait, 1.0))
                return None
            stuck = self._stuck()
            if stuck and self._reconnects.several:
                # Only this broker's name hangs: the next broker is tried, as after a failure.
                self._reconnects.failed(f"{MAX_STUCK} lookups of its name still hang")
                return None
            if self._hold_back(stuck):
                self._waker.wait(1.0)  # a connector that ends wakes the publisher
                return None
            attempt = self._attempt = Connector(make(), self._timeout, self._waker.wake).start()
        outcome = attempt.poll(time.monotonic())
        if outcome is None:
            self._waker.wait(min(max(0.0, attempt.deadline - time.monotonic()), 1.0))
            return None
        self._attempt = None
        if outcome.conn is None:
            if attempt.alive:
                self._abandoned.append(attempt)
            self._reconnects.failed(outcome.error)
        return outcome.conn

    def _stuck(self) -> bool:
        """True while MAX_STUCK abandoned attempts at the next attempt's broker are alive."""
        broker = self._reconnects.broker
        return sum(1 for c in self._abandoned if c.conn.broker == broker) >= MAX_STUCK

    def _hold_back(self, stuck: bool) -> bool:
        """``stuck``, the single broker's lookups hang: no attempt starts (logged once per
        spell)."""
        if stuck and not self._held_back:
            logger.warning(
                "mqtt %s: %d connection attempts are still %s; the next one starts when one "
                "of them returns",
                self._where,
                len(self._abandoned),
                self._abandoned[-1].stage,
            )
        elif self._held_back and not stuck:
            logger.info("mqtt %s: a stuck connection attempt returned; connecting", self._where)
        self._held_back = stuck
        return stuck

    def close(self, deadline: float) -> None:
        """At stop: abandon a running attempt and wait for connectors until ``deadline``.

        A connector still alive then (stuck in name resolution) is left behind, logged.
        """
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.abandon()
            outcome = attempt.poll(time.monotonic())
            if outcome is not None and outcome.conn is not None:
                outcome.conn.close(clean=False)  # opened just before the stop
            self._abandoned.append(attempt)
        for connector in self._abandoned:
            if not connector.join(deadline - time.monotonic()):
                logger.warning(
                    "mqtt %s: a connection attempt is still %s at stop: abandoned",
                    self._where,
                    connector.stage,
                )
        self._abandoned = []
