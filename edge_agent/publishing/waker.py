"""Waking the publisher thread from other threads: one byte per burst, none while results
stream.

``publish()`` runs in the frame loop; the publisher thread sleeps in ``select()`` on its
socket and this waker's. A producer sends a byte only when no wake-up is pending, so a
burst of results costs one syscall per batch the thread takes, not one per result.

When wake-ups come closer together than :data:`HOT_GAP_S` (results stream, about 100 a
second or more: a fast accelerator, several cameras), the thread *holds*: it leaves the
wake-up pending for :data:`LINGER_S` and looks at its queue when that ends, so producers
send no byte at all. On this 2-core machine a byte that wakes the other thread cost the
pipeline thread about a tenth of its time per result. A held result waits at most
``LINGER_S`` longer; a stream slower than 100 results a second never holds.

A result that only repeats earlier ones (a still frame's, see daemon.pipeline) needs no
wake-up of its own: :meth:`Waker.wake_soon` sends no byte when the thread looks within
:data:`SOON_S` anyway, and the thread, told of such results, looks again within
``SOON_S``. A still scene at 30 fps then wakes the thread about 11 times a second (each
window's end and the PUBACKs of its batch), not 60 (each result and its PUBACK).
"""

from __future__ import annotations

import select
import socket
import time

LINGER_S = 0.005  # how long a held wake-up waits: the latency a streaming result may gain
HOT_GAP_S = 0.010  # wake-ups closer than this start a hold
SOON_S = 0.2  # how long a wake_soon() result may wait for the thread's next look


class Waker:
    """A socketpair whose read end goes into the publisher thread's ``select()``.

    ``wake()`` is for any thread; the rest is the publisher thread's.
    """

    def __init__(self) -> None:
        self.socket, self._send = socket.socketpair()
        self.socket.setblocking(False)
        self._send.setblocking(False)
        # Plain values written whole under the GIL. Producers set ``_called`` and then
        # read ``_pending``; the thread clears ``_pending`` before it looks at its queue
        # (or at ``_called``), so a race costs one extra byte, never a lost wake-up.
        self._pending = False  # a byte is on its way, or the thread holds
        self._called = False  # wake() ran since the thread last looked
        self._held_until = 0.0  # monotonic end of the current hold; 0: not holding
        self._last_woken = float("-inf")
        # wake_soon(): producers set ``_soon_called`` and then read ``_wakes_by``; the
        # thread stores ``_wakes_by`` and then reads ``_soon_called`` (see timeout()).
        self._soon_called = False
        self._soon_until = 0.0  # monotonic end of the thread's current look-soon window
        self._wakes_by = float("inf")  # when the thread's current wait ends at the latest

    def wake(self) -> None:
        """Make the thread's next (or current) ``select()`` return, or its hold look again."""
        self._called = True
        if self._pending:
            return
        self._pending = True
        try:
            self._send.send(b"\0")
        except OSError:
            pass  # the buffer is full: a wake-up is pending anyway

    def wake_soon(self) -> None:
        """Make the thread look within :data:`SOON_S`: a byte only if it would not."""
        self._soon_called = True
        if self._wakes_by > time.monotonic() + SOON_S:
            self.wake()

    def timeout(self, timeout: float) -> float:
        """The thread's ``select()`` timeout: no later than the end of its hold, nor of
        its look-soon window (opened by a ``wake_soon()``, kept through other wake-ups)."""
        now = time.monotonic()
        if self._held_until:
            timeout = max(0.0, min(timeout, self._held_until - now))
        if self._soon_until and now >= self._soon_until:
            self._soon_until = 0.0  # the window is over: the thread looks now
        if self._soon_until:
            timeout = max(0.0, min(timeout, self._soon_until - now))
        # Stored before the flag is read: a wake_soon() that read the old value had set
        # the flag already, so this thread sees it; one that reads this value sends a
        # byte if it is too late.
        self._wakes_by = now + timeout
        if self._soon_called:
            self._soon_called = False
            if not self._soon_until:
                self._soon_until = now + SOON_S
                timeout = min(timeout, SOON_S)
                self._wakes_by = now + timeout
        return timeout

    def settle(self, woken: bool) -> None:
        """After the thread's ``select()``, before it looks at its queue: take the byte
        (``woken``: the read end was readable), then hold or stop holding."""
        now = time.monotonic()
        if woken:
            self._drain()
            hot, self._last_woken = now - self._last_woken < HOT_GAP_S, now
            if hot:
                self._hold(now)
            else:
                self._held_until = 0.0
                self._pending = False
        elif self._held_until and now >= self._held_until:
            if self._called:  # results came during the hold: they stream, hold again
                self._hold(now)
            else:
                self._held_until = 0.0
                self._pending = False

    def wait(self, timeout: float) -> None:
        """Sleep until woken or ``timeout`` seconds passed (the thread, offline)."""
        # Offline every result is spooled at once: wake_soon() sends its byte from now
        # on, and one that read the old value is seen by the flag's test.
        self._wakes_by, self._soon_until = float("inf"), 0.0
        called = False
        if self._held_until:  # a hold ends with its connection
            self._held_until = 0.0
            self._pending = False  # first: a wake() from now on sends its byte
            called, self._called = self._called, False  # woken during the hold
        if self._soon_called:  # results came that may have sent no byte
            self._soon_called, called = False, True
        if called:
            return  # the caller looks now
        select.select([self.socket], [], [], timeout)
        self._drain()
        self._pending = False

    def _hold(self, now: float) -> None:
        """Leave the wake-up pending until ``now + LINGER_S``."""
        self._called = False
        self._held_until = now + LINGER_S

    def _drain(self) -> None:
        """Consume the bytes sent."""
        try:
            while self.socket.recv(4096):
                pass
        except OSError:
            pass  # drained (BlockingIOError) or closed
