"""systemd notification protocol (sd_notify) and a progress-driven watchdog.

Outside systemd (``$NOTIFY_SOCKET`` unset) every call is a no-op returning False, so the
daemon can call these unconditionally. Under ``Type=notify`` the daemon reports
``READY=1`` once cameras and model are up, ``STATUS=`` lines for ``systemctl status``,
``RELOADING=1`` around a SIGHUP reload and ``STOPPING=1`` on shutdown.

With ``WatchdogSec=`` set, systemd restarts the service when pings stop. The
:class:`Watchdog` here pings only when the pipeline reports that a frame was actually
processed: there is deliberately no timer thread, so a stalled pipeline (hung camera,
wedged Edge TPU) stops the pings and systemd restarts the service.

The datagram is sent to ``$NOTIFY_SOCKET`` directly, as libsystemd's ``sd_notify`` does:
a dozen lines need no optional dependency.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Callable

logger = logging.getLogger(__name__)

# A send must never stall the frame loop for long if systemd's queue is full.
_SEND_TIMEOUT_S = 1.0


def _socket_address(value: str) -> str | None:
    """Translate a $NOTIFY_SOCKET value into an AF_UNIX address, None if unsupported."""
    if len(value) > 1 and value[0] == "@":
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. vsock: addresses, which this daemon never runs under


class Notifier:
    """Send sd_notify state strings to the service manager; never raises.

    ``$NOTIFY_SOCKET`` is read at every call (like libsystemd's ``sd_notify``), so a
    Notifier can be created before the environment is known.
    """

    def __init__(self) -> None:
        # Log the first failure of a streak as a warning, the rest at debug level:
        # the watchdog may fail every few seconds and must not flood the journal.
        self._failing = False
        # READY=1 sent: a reload before it (an early SIGHUP) is not reported, or its
        # READY=1 would tell systemd start-up is done before it is.
        self._ready = False

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` is set, i.e. we run under a notify service."""
        return bool(os.environ.get("NOTIFY_SOCKET"))

    def notify(self, state: str) -> bool:
        """Send one state string (newline-separated ``KEY=VALUE`` assignments).

        Args:
            state: e.g. ``"READY=1"`` or ``"STATUS=running\\nWATCHDOG=1"``.

        Returns:
            True when the message was handed to the service manager; False when not
            under systemd or when sending failed (logged, never raised).
        """
        value = os.environ.get("NOTIFY_SOCKET")
        if not value:
            return False
        try:
            sent = self._send(value, state)
        except OSError as exc:  # never stop the daemon for its service manager
            self._failed("sd_notify to %s failed: %s", value, exc)
            return False
        if sent:
            if self._failing:
                logger.info("sd_notify to %s works again", value)
            self._failing = False
        else:
            self._failed("sd_notify to %s was not delivered", value)
        return sent

    def _send(self, value: str, state: str) -> bool:
        """Send the datagram directly to the notify socket."""
        address = _socket_address(value)
        if address is None:
            self._failed("NOTIFY_SOCKET=%r is not a unix socket address; ignoring it", value)
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(_SEND_TIMEOUT_S)
            sock.sendto(state.encode("utf-8"), address)
        return True

    def _failed(self, message: str, *args: object) -> None:
        """Log a failure: warning for the first of a streak, debug afterwards."""
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        logger.log(level, message, *args)

    def ready(self, status: str | None = None) -> bool:
        """Report startup (or a reload) complete: ``READY=1`` plus an optional status.

        Args:
            status: optional one-line text for ``systemctl status``.

        Returns:
            As :meth:`notify`.
        """
        self._ready = True
        state = "READY=1"
        if status is not None:
            state += "\nSTATUS=" + _one_line(status)
        return self.notify(state)

    def status(self, text: str) -> bool:
        """Set the free-form status line shown by ``systemctl status``.

        Args:
            text: status text; newlines are replaced by spaces (they would end the field).

        Returns:
            As :meth:`notify`.
        """
        return self.notify("STATUS=" + _one_line(text))

    def stopping(self) -> bool:
        """Report that the service is shutting down (``STOPPING=1``).

        Returns:
            As :meth:`notify`.
        """
        return self.notify("STOPPING=1")

    def reloading(self, monotonic_usec: int | None = None) -> bool:
        """Report that a configuration reload started; send :meth:`ready` when done.

        systemd >= 253 (``Type=notify-reload``) requires ``MONOTONIC_USEC`` with the
        CLOCK_MONOTONIC time at which the reload began; older versions ignore it.

        Args:
            monotonic_usec: that time in microseconds; default now.

        Returns:
            As :meth:`notify`; False, sending nothing, before the first :meth:`ready`.
        """
        if not self._ready:
            return False
        if monotonic_usec is None:
            monotonic_usec = time.monotonic_ns() // 1000  # CLOCK_MONOTONIC on Linux
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={int(monotonic_usec)}")

    def reloaded(self) -> bool:
        """Report a reload done (``READY=1``), after :meth:`reloading`; nothing before
        the first :meth:`ready`, when start-up has still to send it.

        Returns:
            As :meth:`notify`; False before the first :meth:`ready`.
        """
        return self.ready() if self._ready else False

    def watchdog(self) -> bool:
        """Ping the systemd watchdog (``WATCHDOG=1``); prefer :class:`Watchdog`.

        Returns:
            As :meth:`notify`.
        """
        return self.notify("WATCHDOG=1")


def _one_line(text: str) -> str:
    """Collapse line breaks, which would otherwise start a new KEY=VALUE field."""
    return " ".join(text.splitlines())


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The recommended watchdog ping period in seconds, or None when disabled.

    systemd sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, naming the process that
    must ping) when the unit has ``WatchdogSec=``. Pinging at half the timeout is what
    sd_watchdog_enabled(3) recommends.

    Args:
        environ: environment to read; default ``os.environ``.

    Returns:
        Half of ``$WATCHDOG_USEC`` in seconds; None when unset, zero, invalid, or when
        ``$WATCHDOG_PID`` names another process.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    raw_pid = env.get("WATCHDOG_PID")
    if raw_pid:
        try:
            pid = int(raw_pid)
        except ValueError:
            logger.warning("ignoring the systemd watchdog: WATCHDOG_PID=%r is invalid", raw_pid)
            return None
        if pid != os.getpid():
            logger.debug("systemd watchdog is meant for pid %d, not %d", pid, os.getpid())
            return None
    try:
        usec = int(raw_usec)
    except ValueError:
        logger.warning("ignoring the systemd watchdog: WATCHDOG_USEC=%r is invalid", raw_usec)
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


class Watchdog:
    """Pings the systemd watchdog, driven only by pipeline progress.

    Call :meth:`progress` each time a frame has actually been processed; it sends
    ``WATCHDOG=1`` at most once per ``interval``. Nothing else pings, so when the
    pipeline stalls systemd sees the pings stop and restarts the service.

    Args:
        notifier: where to send the pings.
        interval: minimum seconds between pings (see :func:`watchdog_interval`);
            None disables the watchdog and makes :meth:`progress` a cheap no-op.
        clock: monotonic clock in seconds (injectable for tests).

    Raises:
        ValueError: if ``interval`` is not positive.
    """

    def __init__(
        self,
        notifier: Notifier,
        interval: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        if interval is not None and not interval > 0:
            raise ValueError(f"watchdog interval must be positive, got {interval!r}")
        self._notifier = notifier
        self._interval = interval
        self._clock = clock
        self._last: float | None = None

    @classmethod
    def from_environment(
        cls, notifier: Notifier, *, clock: Callable[[], float] = time.monotonic
    ) -> Watchdog:
        """Build a watchdog with the interval systemd asked for (disabled if none).

        Args:
            notifier: where to send the pings.
            clock: monotonic clock in seconds.

        Returns:
            The watchdog; ``enabled`` tells whether systemd configured one.
        """
        return cls(notifier, watchdog_interval(), clock=clock)

    @property
    def enabled(self) -> bool:
        """True when an interval is configured."""
        return self._interval is not None

    @property
    def interval(self) -> float | None:
        """Minimum seconds between pings, or None when disabled."""
        return self._interval

    @property
    def last_ping(self) -> float | None:
        """Clock time of the last ping attempt, or None before the first."""
        return self._last

    def progress(self) -> bool:
        """Record that the pipeline processed a frame; ping if the interval elapsed.

        Returns:
            True when a ping was sent by this call.
        """
        if self._interval is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        # Count failed attempts too, so a broken socket is retried once per interval
        # rather than on every frame.
        self._last = now
        return self._notifier.watchdog()
