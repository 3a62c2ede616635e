"""What the publisher thread has to send: the queue, retained latest values, in-flight window."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from edge_agent.publishing.spool import Position

logger = logging.getLogger(__name__)
OVERFLOW_LOG_S = 10.0  # a full queue is logged at most this often


class Outgoing(NamedTuple):
    """One message to publish; ``created`` is its ``time.monotonic()`` at publish()."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    durable: bool
    created: float = 0.0


class Outbox:
    """Thread-safe hand-over from producers to the publisher thread.

    Messages are queued in production order, bounded by ``max_queued`` (the oldest is
    dropped beyond it). Non-durable retained messages are not queued: only the latest
    value per topic is kept, marked dirty until published, and can be marked dirty
    again (after a reconnect) to be re-published. Durable retained messages (model
    states) are queued like any durable message, and the latest is also kept for
    re-publishing after a reconnect.

    Args:
        max_queued: bound of the queue.
        answerable: topics whose latest value is kept even when it is not retained, so
            that a request can have it sent again (:meth:`repeat`; the status topic).
        where: the brokers, for the log line of a full queue.
    """

    def __init__(self, max_queued: int, answerable: Iterable[str] = (), where: str = ""):
        self._max, self._where = max_queued, where
        self._overflow_log_at = 0.0
        self._answerable = frozenset(answerable)
        self._latest: dict[str, Outgoing] = {}
        self._lock = threading.Lock()
        self._queue: collections.deque[Outgoing] = collections.deque()
        self._retained: dict[str, Outgoing] = {}
        self._dirty: dict[str, None] = {}  # topics, in the order they were marked
        self.overflowed = 0
        self.durable_put = self.durable_overflowed = 0  # for the publisher's loss ledger

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing queued, and no retained value waiting (e.g. for the broker's quota)."""
        with self._lock:
            return not (self._queue or self._dirty)

    def put(self, msg: Outgoing) -> Outgoing | None:
        """Queue a message (or store it as a retained latest value).

        Returns:
            The oldest queued message if it had to be dropped to respect the bound
            (counted in :attr:`overflowed`, logged once per ``OVERFLOW_LOG_S`` at most).
        """
        dropped = self._put(msg)
        if dropped is not None and time.monotonic() >= self._overflow_log_at:
            # The producer outruns the publisher thread: said now and then, not per message.
            self._overflow_log_at = time.monotonic() + OVERFLOW_LOG_S
            logger.error(
                "mqtt %s: queue of %d full, dropping the oldest messages (%d so far)",
                self._where,
                self._max,
                self.overflowed,
            )
        return dropped

    def _put(self, msg: Outgoing) -> Outgoing | None:
        """:meth:`put` under the lock."""
        with self._lock:
            if msg.topic in self._answerable:
                self._latest[msg.topic] = msg
            if msg.retain and not msg.durable:
                self._retained[msg.topic] = msg
                self._dirty[msg.topic] = None
                return None
            if msg.retain:  # durable and retained: every one is sent, in order, and the
                self._retained[msg.topic] = msg  # latest is re-published after a reconnect
            dropped = None
            if len(self._queue) >= self._max:
                dropped = self._queue.popleft()
                self.overflowed += 1
                self.durable_overflowed += dropped.durable
            self._queue.append(msg)
            self.durable_put += msg.durable
            return dropped

    def peek(self) -> Outgoing | None:
        """The oldest queued message, left in place."""
        with self._lock:
            return self._queue[0] if self._queue else None

    def pop(self) -> Outgoing | None:
        """Remove and return the oldest queued message."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def oldest_durable(self) -> float | None:
        """``created`` of the oldest queued durable message (None if there is none)."""
        with self._lock:
            return next((m.created for m in self._queue if m.durable), None)

    def pop_durable(self, limit: int) -> list[Outgoing]:
        """Remove and return up to ``limit`` of the oldest durable messages, in order.

        Non-durable messages stay queued, in order (they go out live or not at all).
        """
        with self._lock:
            taken: list[Outgoing] = []
            kept: list[Outgoing] = []
            while self._queue and len(taken) < limit:
                msg = self._queue.popleft()
                (taken if msg.durable else kept).append(msg)
            self._queue.extendleft(reversed(kept))
            return taken

    def push_front(self, msgs: Iterable[Outgoing]) -> None:
        """Put messages back at the head, keeping their order (they are the oldest)."""
        with self._lock:
            self._queue.extendleft(reversed(list(msgs)))

    def take_dirty(self, limit: int | None = None, qos0: bool = False) -> list[Outgoing]:
        """The retained latest values not yet published, as marked (the first ``limit`` of
        them QoS 1 or 2, any QoS 0 ones among them too, or counted with ``qos0``: sent at
        QoS 1 while probing); clears their marks."""
        with self._lock:
            out: list[Outgoing] = []
            for topic in self._dirty:
                msg = self._retained[topic]
                if (msg.qos or qos0) and limit is not None:
                    if limit <= 0:
                        continue
                    limit -= 1
                out.append(msg)
            for m in out:
                del self._dirty[m.topic]
            return out

    def repeat(self, topic: str) -> bool:
        """Send ``topic``'s latest value again (a status request): a retained one is marked
        for re-publishing, a live one is queued again, behind what is queued already.

        Returns:
            False if there is no value yet (nothing was published on ``topic``).
        """
        with self._lock:
            if topic in self._retained:
                self._dirty[topic] = None
                return True
            latest = self._latest.get(topic)
            if latest is None:
                return False
            if len(self._queue) < self._max:  # a request never pushes out a result
                self._queue.append(latest)
            return True

    def mark_retained_dirty(self) -> None:
        """Mark every retained latest value for re-publishing (after a reconnect)."""
        with self._lock:
            self._dirty.update(dict.fromkeys(self._retained))  # after those marked already


class Inflight(NamedTuple):
    """A durable message awaiting its acknowledgement (``position`` if from the spool);
    ``refused``: the broker answered with a failure reason (not delivered, not retried)."""

    msg: Outgoing
    position: Position | None
    refused: bool = False


class InflightWindow:
    """Durable messages sent on the current connection, released strictly in send order.

    An acknowledged message is released only once every message sent before it is
    acknowledged too, so spool commits never pass an unacknowledged record.
    """

    def __init__(self) -> None:
        self._entries: collections.OrderedDict[int, list] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self,
        mid: int,
        msg: Outgoing,
        position: Position | None = None,
        *,
        acked: bool = False,
        refused: bool = False,
    ) -> list[Inflight]:
        """Record a message sent with message id ``mid``.

        Args:
            mid: its message id on this connection.
            msg: the message.
            position: its spool position, if replayed from the spool.
            acked: already done (QoS 0: nothing to wait for).
            refused: with ``acked``, refused without being sent (too large for the broker).

        Returns:
            The messages released by this call (only possible with ``acked``), in order.
        """
        self._entries[mid] = [Inflight(msg, position), False]
        return self.ack(mid, refused=refused) if acked else []

    def ack(self, mid: int, *, refused: bool = False) -> list[Inflight]:
        """Mark ``mid`` acknowledged (``refused``: with a failure reason); return the
        messages now released, in order."""
        entry = self._entries.get(mid)
        if entry is None:
            return []
        entry[1] = True
        if refused:
            entry[0] = entry[0]._replace(refused=True)
        released = []
        while self._entries:
            first_mid, (item, acked) = next(iter(self._entries.items()))
            if not acked:
                break
            del self._entries[first_mid]
            released.append(item)
        return released

    def oldest_unsecured(self) -> float | None:
        """``created`` of the oldest message held only here (not acked, not spooled)."""
        return next(
            (
                e[0].msg.created
                for e in self._entries.values()
                if not e[1] and e[0].position is None
            ),
            None,
        )

    def secure(self, store: Callable[[Outgoing], Position]) -> int:
        """Hand every unacknowledged message held only in memory to ``store``, in send order.

        ``store`` (the spool's append) returns the message's spool position, which the entry
        keeps: its acknowledgement then commits the spool, and a lost connection leaves it
        to the spool's replay. Stops at the first exception from ``store`` (re-raised);
        entries stored until then keep their positions.

        Returns:
            How many messages were stored.
        """
        stored = 0
        for entry in self._entries.values():
            item, acked = entry
            if acked or item.position is not None:
                continue
            entry[0] = Inflight(item.msg, store(item.msg))
            stored += 1
        return stored

    def acked_held(self) -> list[Inflight]:
        """Live messages acknowledged but not released (an earlier one awaits its
        acknowledgement): what :meth:`reset` forgets as delivered."""
        return [e[0] for e in self._entries.values() if e[1] and e[0].position is None]

    def reset(self) -> list[Outgoing]:
        """Forget the window (connection gone); return unacknowledged non-spool messages.

        Messages from the spool are not returned: they are still in the spool.
        """
        unacked = [e[0].msg for e in self._entries.values() if not e[1] and e[0].position is None]
        self._entries.clear()
        return unacked
