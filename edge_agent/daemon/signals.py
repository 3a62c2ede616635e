"""Stop/reload signal handling whose handlers only set flags.

SIGTERM and SIGINT request a stop, SIGHUP a reload. Python runs signal handlers in the
main thread between bytecodes, possibly while that thread holds a lock inside
``threading.Event.wait``; calling ``Event.set()`` from the handler could then deadlock
(the Python docs warn against locks in handlers). So the handler only bumps plain
counters and puts the signal number on a ``queue.SimpleQueue`` (whose ``put`` is
reentrant by design); a small relay thread owned by :class:`SignalFlags` turns that into
``stop_event.set()`` and the log line, outside the handler.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Iterable
from types import FrameType

from edge_agent.errors import EdgeAgentError

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNALS = (signal.SIGHUP,)

_RELAY_JOIN_TIMEOUT_S = 2.0
_RELAY_POLL_S = 0.5


def _require_main_thread(action: str) -> None:
    """Python only lets the main thread change signal handlers; say so clearly."""
    if threading.current_thread() is not threading.main_thread():
        raise EdgeAgentError(
            f"SignalFlags.{action}() must be called from the main thread, "
            f"not {threading.current_thread().name!r}"
        )


class SignalFlags:
    """Stop and reload requests delivered by signals, as flags and an Event.

    Use as a context manager (or call :meth:`install` / :meth:`restore`) in the main
    thread. Other threads wait on :attr:`stop_event`; the main loop polls
    :meth:`reload_requested` or blocks in :meth:`wait`.

    Args:
        stop_signals: signals that request a stop (default SIGTERM, SIGINT).
        reload_signals: signals that request a reload (default SIGHUP).

    Raises:
        ValueError: if a signal is listed as both stop and reload.
    """

    def __init__(
        self,
        stop_signals: Iterable[int] = STOP_SIGNALS,
        reload_signals: Iterable[int] = RELOAD_SIGNALS,
    ):
        self._stop_signals = tuple(signal.Signals(s) for s in stop_signals)
        self._reload_signals = tuple(signal.Signals(s) for s in reload_signals)
        if set(self._stop_signals) & set(self._reload_signals):
            raise ValueError("a signal cannot both stop and reload")
        self.stop_event = threading.Event()
        """Set (by the relay thread, shortly after a stop signal) or by request_stop()."""
        # Written only by the signal handler (main thread):
        self._stop_count = 0
        self._reload_count = 0
        self._last_signal: int | None = None
        # Written only by reload_requested(): comparing with _reload_count consumes the
        # request without a lock and without losing one that arrives meanwhile.
        self._reload_seen = 0
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._previous: dict[int, object] = {}
        self._relay: threading.Thread | None = None
        self._relay_sentinel: object = object()
        self._relay_stop = threading.Event()

    # -- the handler ---------------------------------------------------------------

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: bump counters and enqueue; nothing that takes a lock."""
        if signum in self._stop_signals:
            self._stop_count += 1
        else:
            self._reload_count += 1
        self._last_signal = signum
        self._queue.put_nowait(signum)

    # -- the relay thread ----------------------------------------------------------

    def _relay_loop(self, sentinel: object) -> None:
        """Turn queued signal numbers into Event sets and log lines until ``sentinel``."""
        if hasattr(signal, "pthread_sigmask"):
            # Keep process-directed signals away from this thread, so they interrupt
            # the main thread's waits and the Python handler runs without delay.
            signal.pthread_sigmask(
                signal.SIG_BLOCK, set(self._stop_signals) | set(self._reload_signals)
            )
        while not self._relay_stop.is_set():
            try:
                item = self._queue.get(timeout=_RELAY_POLL_S)
            except queue.Empty:
                continue
            if item is sentinel:
                break
            if not isinstance(item, int):
                continue  # the sentinel of an earlier relay that timed out
            signum = item
            name = signal.Signals(signum).name
            if signum in self._stop_signals:
                if self._stop_count > 1:
                    logger.warning(
                        "received %s again (%d times): still stopping", name, self._stop_count
                    )
                else:
                    logger.info("received %s: stopping", name)
                self.stop_event.set()
            else:
                logger.info("received %s: reload requested", name)
            self._wake.set()

    # -- public API ----------------------------------------------------------------

    @property
    def installed(self) -> bool:
        """True between :meth:`install` and :meth:`restore`."""
        return bool(self._previous)

    @property
    def stop_requested(self) -> bool:
        """True as soon as a stop signal was handled or :meth:`request_stop` called."""
        return self._stop_count > 0 or self.stop_event.is_set()

    @property
    def stop_count(self) -> int:
        """How many stop signals arrived (a daemon may force-exit on the second)."""
        return self._stop_count

    @property
    def last_signal(self) -> int | None:
        """Number of the most recent signal handled, or None."""
        return self._last_signal

    def request_stop(self) -> None:
        """Request a stop from code (e.g. a fatal error), as a stop signal would."""
        self.stop_event.set()
        self._wake.set()

    def reload_requested(self) -> bool:
        """Return True once per burst of reload signals, clearing the request.

        Several signals arriving before this is called count as one request.

        Returns:
            True if a reload signal arrived since the previous call.
        """
        count = self._reload_count
        if count == self._reload_seen:
            return False
        self._reload_seen = count
        return True

    def _pending(self) -> bool:
        """A stop, or a reload not yet consumed."""
        return self.stop_requested or self._reload_count != self._reload_seen

    def wait(self, timeout: float) -> bool:
        """Block until a stop or reload request is pending, or the timeout passes.

        Does not consume the reload request: call :meth:`reload_requested` next.
        May return False early after a request that was already consumed.

        Args:
            timeout: seconds to wait at most.

        Returns:
            True when a stop or an unconsumed reload request is pending.
        """
        if self._pending():
            return True
        self._wake.wait(timeout)
        self._wake.clear()
        return self._pending()

    def install(self) -> None:
        """Install the handlers (remembering the previous ones) and start the relay.

        Calling it again while installed does nothing.

        Raises:
            EdgeAgentError: when not called from the main thread, or when the OS
                refuses a handler (the ones already installed are restored).
        """
        _require_main_thread("install")
        if self.installed:
            return
        self._relay_stop.clear()
        # A fresh sentinel per relay, so a stale one can never stop a later relay.
        self._relay_sentinel = object()
        self._relay = threading.Thread(
            target=self._relay_loop,
            args=(self._relay_sentinel,),
            name="edge-agent-signals",
            daemon=True,
        )
        self._relay.start()
        try:
            for signum in self._stop_signals + self._reload_signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        except (OSError, ValueError) as exc:
            self.restore()
            raise EdgeAgentError(f"cannot install signal handlers: {exc}") from exc
        logger.debug(
            "signal handlers installed: stop on %s, reload on %s",
            "/".join(s.name for s in self._stop_signals),
            "/".join(s.name for s in self._reload_signals),
        )

    def restore(self) -> None:
        """Put back the handlers found by :meth:`install` and stop the relay thread.

        Flags and ``stop_event`` keep their state. Does nothing when not installed.

        Raises:
            EdgeAgentError: when not called from the main thread.
        """
        _require_main_thread("restore")
        for signum, previous in self._previous.items():
            # None means a handler installed from C that Python cannot reinstate.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
        relay, self._relay = self._relay, None
        if relay is None:
            return
        # Signals queued before the sentinel are still relayed, in order.
        self._queue.put(self._relay_sentinel)
        relay.join(timeout=_RELAY_JOIN_TIMEOUT_S)
        if relay.is_alive():
            self._relay_stop.set()
            relay.join(timeout=_RELAY_JOIN_TIMEOUT_S)
            logger.warning("signal relay thread did not exit in time")

    def __enter__(self) -> SignalFlags:
        """Install the handlers."""
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Restore the previous handlers."""
        self.restore()
