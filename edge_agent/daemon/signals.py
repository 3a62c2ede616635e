"""Signals the way gunicorn's arbiter takes them: handlers enqueue, the main loop drains.

SIGTERM and SIGINT request a stop, SIGHUP a reload. The handler only counts stop signals
and puts the signal number on a ``queue.SimpleQueue``, whose ``put`` is reentrant and so
safe inside a handler (an ``Event.set()`` there could deadlock on the lock the interrupted
main thread holds). The main loop blocks in :meth:`SignalQueue.wait`, which drains the
queue and returns one typed :class:`Request`. There is no relay thread.

``edge-agent run`` installs the handlers before it reads its config, so an early SIGHUP
(a config-management tool reloading every service) is queued instead of killing the
process with the default action.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue
import signal
import threading
from collections.abc import Iterable, Iterator
from types import FrameType

from edge_agent.errors import EdgeAgentError, StopRequested

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNALS = (signal.SIGHUP,)


class Request(enum.Enum):
    """What the signals drained by one :meth:`SignalQueue.wait` ask the main loop for."""

    STOP = "stop"
    RELOAD = "reload"


class SignalQueue:
    """Stop and reload signals, queued by the handlers and drained by the main loop.

    Use as a context manager (or :meth:`install` / :meth:`restore`) in the main thread,
    and call :meth:`wait` from the main loop only.

    Args:
        stop_signals: signals that request a stop (default SIGTERM, SIGINT).
        reload_signals: signals that request a reload (default SIGHUP).

    Raises:
        ValueError: a signal is listed as both stop and reload.
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
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._stop_count = 0  # written by the handler only: a plain int, no lock
        self._stopping = False  # a stop was drained: every later wait() says STOP
        self._previous: dict[int, object] = {}
        self._interruptible = False  # inside stop_interrupts(): a stop also raises

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """The handler: count a stop, enqueue, nothing that takes a lock; inside
        :meth:`stop_interrupts`, a stop then raises (once) in the main thread."""
        if signum in self._stop_signals:
            self._stop_count += 1
        self._queue.put_nowait(signum)
        if self._interruptible and signum in self._stop_signals:
            self._interruptible = False
            raise StopRequested(f"received {signal.Signals(signum).name}")

    @contextlib.contextmanager
    def stop_interrupts(self) -> Iterator[None]:
        """A block that a stop signal cuts short: a blocking ``open`` or ``read`` (a config
        FIFO nobody feeds) must not hold a SIGTERM back until systemd's SIGKILL. The stop
        stays queued too, so :meth:`wait` still returns STOP. Main thread only.

        Raises:
            StopRequested: a stop signal arrived before or inside the block.
        """
        if self.stop_requested:
            raise StopRequested("a stop signal had arrived")
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    @property
    def installed(self) -> bool:
        """True between :meth:`install` and :meth:`restore`."""
        return bool(self._previous)

    @property
    def stop_count(self) -> int:
        """Stop signals received so far, drained or not (a second one may mean: hurry)."""
        return self._stop_count

    @property
    def stop_requested(self) -> bool:
        """True once a stop signal arrived, even before it is drained."""
        return self._stopping or self._stop_count > 0

    def is_set(self) -> bool:
        """:attr:`stop_requested`, read as a cancel flag
        (:class:`~edge_agent.inference.protocol.Cancel`): a stop gives up the first
        model load instead of waiting out ``inference.load_timeout``."""
        return self.stop_requested

    def wait(self, timeout: float) -> Request | None:
        """Block up to ``timeout`` seconds for signals and drain every one queued.

        A burst of reload signals is one reload; a stop wins over a reload and is
        sticky: once drained, every later call returns STOP at once.

        Returns:
            STOP, RELOAD, or None when nothing arrived in time.
        """
        if self._stopping:
            return Request.STOP
        try:
            received = [self._queue.get(timeout=max(0.0, timeout))]
        except queue.Empty:
            return None
        while True:
            try:
                received.append(self._queue.get_nowait())
            except queue.Empty:
                break
        stops = [s for s in received if s in self._stop_signals]
        if stops:
            name = signal.Signals(stops[-1]).name
            if self._stopping or self._stop_count > 1:
                logger.warning("received %s (%d stop signals): stopping", name, self._stop_count)
            else:
                logger.info("received %s: stopping", name)
            self._stopping = True
            return Request.STOP
        logger.info("received %s: reload requested", signal.Signals(received[-1]).name)
        return Request.RELOAD

    def install(self) -> None:
        """Install the handlers, remembering the previous ones; again does nothing.

        Raises:
            EdgeAgentError: not called from the main thread, or the OS refused a
                handler (those already installed are restored).
        """
        _require_main_thread("install")
        if self.installed:
            return
        try:
            for signum in self._stop_signals + self._reload_signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        except (OSError, ValueError) as exc:
            self.restore()
            raise EdgeAgentError(f"cannot install signal handlers: {exc}") from exc

    def restore(self) -> None:
        """Put back the handlers found by :meth:`install`; queued signals stay queued.

        Raises:
            EdgeAgentError: not called from the main thread.
        """
        _require_main_thread("restore")
        for signum, previous in self._previous.items():
            # None means a handler installed from C that Python cannot reinstate.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def __enter__(self) -> SignalQueue:
        """Install the handlers."""
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Restore the previous handlers."""
        self.restore()


def _require_main_thread(action: str) -> None:
    """Python only lets the main thread change signal handlers; say so clearly."""
    if threading.current_thread() is not threading.main_thread():
        raise EdgeAgentError(
            f"SignalQueue.{action}() must be called from the main thread, "
            f"not {threading.current_thread().name!r}"
        )
