"""Waking the publisher thread from other threads, one byte per burst.

``publish()`` runs in the frame loop; the publisher thread sleeps in ``select()`` on its
socket and this waker's. A producer sends a byte only when no wake-up is pending, so a
burst of results costs one syscall per batch the thread takes, not one per result.
"""

from __future__ import annotations

import select
import socket


class Waker:
    """A socketpair whose read end goes into the publisher thread's ``select()``."""

    def __init__(self) -> None:
        self.socket, self._send = socket.socketpair()
        self.socket.setblocking(False)
        self._send.setblocking(False)
        # Set by producers, cleared by the thread after draining: a plain bool (written
        # whole under the GIL). A race costs at most one extra byte, never a lost wake-up:
        # the thread clears it only after draining, then looks at its queue.
        self._pending = False

    def wake(self) -> None:
        """Make the thread's next (or current) ``select()`` return."""
        if self._pending:
            return
        self._pending = True
        try:
            self._send.send(b"\0")
        except OSError:
            pass  # the buffer is full: a wake-up is pending anyway

    def drain(self) -> None:
        """Consume the pending wake-ups (the thread then looks at its queue)."""
        try:
            while self.socket.recv(4096):
                pass
        except OSError:
            pass  # drained (BlockingIOError) or closed
        self._pending = False

    def wait(self, timeout: float) -> None:
        """Sleep until woken or ``timeout`` seconds passed."""
        select.select([self.socket], [], [], timeout)
        self.drain()
