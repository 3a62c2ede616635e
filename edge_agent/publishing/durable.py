"""Where the publisher keeps results the broker has not acknowledged: memory, then disk.

:class:`Durability` owns the publisher's :class:`~edge_agent.publishing.spool.Spool`, its
:class:`~edge_agent.publishing.ledger.LossLedger` and the storage error, and decides when
a result held only in memory must go to disk:

* offline, every durable message goes to the spool at once (:meth:`spool_queue`);
* online, a result is held only in memory while the broker acknowledges it promptly
  (nothing is written per result: SD cards). Once the oldest unacknowledged or queued
  result is ``max_unacked_s / 2`` old, every result held only in memory is spooled and
  fsynced (:meth:`secure_overdue`): a black-holed link looks alive until keepalive
  gives up, and a power cut meanwhile must not take those results with it;
* without a usable spool (read-only, full or broken storage, or locked) publishing goes
  on, results are not durable, :attr:`storage_error` says so, and the spool is re-opened
  every ``retry_s`` seconds.

Not thread-safe: the publisher thread is the only caller.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from edge_agent.errors import PublishError
from edge_agent.publishing.ledger import LossLedger
from edge_agent.publishing.outbox import Inflight, InflightWindow, Outbox, Outgoing
from edge_agent.publishing.spool import Position, Spool, SpooledMessage

logger = logging.getLogger(__name__)

RETRY_S = 5.0
MIN_FREE_BYTES = 1 << 20  # below this the spool could not take an outage's results


class Durability:
    """The spool side of one publisher; see the module docstring.

    Args:
        directory: the spool directory.
        max_bytes: the spool's bound.
        max_unacked_s: longest a result may be held only in memory.
        outbox, inflight: the publisher's queue and in-flight window.
        where: ``host:port`` for log messages.
    """

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        max_unacked_s: float,
        outbox: Outbox,
        inflight: InflightWindow,
        where: str,
    ):
        self.directory, self.max_bytes, self.where = directory, max_bytes, where
        self.overdue_s = max_unacked_s / 2
        self._outbox, self._inflight = outbox, inflight
        self.spool: Spool | None = None
        self._ledger: LossLedger | None = None
        self._retry_at = self._space_at = 0.0
        self._space_error = ""
        self._suspect = False
        self.secured = 0  # durable messages acknowledged or spooled
        self.spooled = self.dropped = self.possibly_lost_last_run = 0
        # The last storage error ("" once the spool works again): the daemon puts it in
        # its status, so a full or read-only disk is visible to the fleet, not only logged.
        self.storage_error = ""
        self.storage_errors = 0

    @property
    def pending(self) -> int:
        """Messages in the spool not yet committed."""
        return self.spool.pending if self.spool is not None else 0

    def open_if_due(self) -> None:
        """Open the spool and the loss ledger (again) unless open or not yet due."""
        if self.spool is not None or time.monotonic() < self._retry_at:
            return
        try:
            spool = Spool(self.directory, self.max_bytes, sync_interval=min(1.0, self.overdue_s))
        except PublishError as exc:
            self._failed(f"{exc}; results are not durable")
            return
        self.spool, self.storage_error = spool, ""
        self._ledger = LossLedger(self.directory / "unsecured")
        self.possibly_lost_last_run = self._ledger.previous
        if self._ledger.previous:
            logger.error(
                "mqtt %s: the last run stopped with up to %d results held only in memory "
                "(possibly lost)",
                self.where,
                self._ledger.previous,
            )

    def read(self, limit: int, after: Position | None) -> list[SpooledMessage]:
        """Spooled messages to replay (none without a spool)."""
        return self.spool.read(limit, after) if self.spool is not None else []

    def unsecured(self) -> int:
        """Durable messages produced and neither acknowledged, spooled nor overflowed."""
        box = self._outbox
        return box.durable_put - box.durable_overflowed - self.secured

    def released(self, item: Inflight) -> bool:
        """Account for an acknowledged message; True if it came from (was in) the spool."""
        if item.position is not None:
            if self.spool is not None:
                self.spool.commit(item.position)
            return True
        self.secured += item.msg.durable
        return False

    def spool_queue(self, *, retry_now: bool = False) -> None:
        """Offline: durable queued messages to the spool, in order; the rest is dropped.

        Args:
            retry_now: ignore the retry delay after a storage error (at stop).
        """
        if retry_now:
            self._retry_at = 0.0
        while time.monotonic() >= self._retry_at:
            msg = self._outbox.peek()
            if msg is None:
                return
            if msg.durable:
                if self.spool is None or not self._append(msg):
                    return  # kept in memory, in order (bounded by max_queued)
            else:
                self.dropped += 1
            self._outbox.pop()

    def secure_overdue(self, now: float | None = None) -> Position | None:
        """Spool every result held only in memory once the oldest is ``overdue_s`` old.

        In-flight ones first (they are older and already sent), then the queue, in
        order; then fsync, so a power cut right after loses none of them.

        Returns:
            The spool position of the last in-flight message spooled (the replay goes
            on after it), or None if none was.
        """
        spool = self.spool
        if spool is None or time.monotonic() < self._retry_at:
            return None
        now = time.monotonic() if now is None else now
        ages = [self._inflight.oldest_unsecured(), self._outbox.oldest_durable()]
        oldest = min((t for t in ages if t is not None), default=None)
        if oldest is None or now - oldest < self.overdue_s:
            self._suspect = self._suspect and spool.pending > 0
            return None
        last: Position | None = None
        inflight = queued = 0

        def store(msg: Outgoing) -> Position:
            nonlocal last, inflight
            last = self._store(msg)
            inflight += 1
            return last

        try:
            self._inflight.secure(store)
            taken = self._outbox.pop_durable(len(self._outbox))
            for msg in taken:
                if not self._append(msg):
                    self._outbox.push_front(taken[queued:])
                    return last
                queued += 1
            spool.sync_if_due(force=True)
        except PublishError as exc:
            self._failed(f"{exc}; keeping messages in memory")
            return last
        if not self._suspect:
            logger.warning(
                "mqtt %s: no acknowledgement for %.1fs: link suspect, spooled %d in flight "
                "and %d queued results",
                self.where,
                now - oldest,
                inflight,
                queued,
            )
        self._suspect = True
        return last

    def sync(self) -> None:
        """fsync the spool when due and renew the loss ledger; errors are logged only."""
        if self.spool is None:
            return
        self._check_space()
        self._ledger.update(self._outbox.durable_put, self.unsecured())
        try:
            self.spool.sync_if_due()
        except PublishError as exc:
            logger.error("mqtt %s: %s", self.where, exc)

    def close(self) -> None:
        """Persist the exact count left only in memory, close the spool (idempotent)."""
        if self._ledger is not None:
            self._ledger.close(self.unsecured())
        if self.spool is not None:
            self.spool.close()

    def stats(self) -> dict[str, Any]:
        """The spool's counters for the publisher's stats."""
        spool = self.spool
        return {
            "spooled": self.spooled,
            "spool_pending": spool.pending if spool else 0,
            "spool_bytes": spool.pending_bytes if spool else 0,
            "spool_dropped": spool.dropped if spool else 0,
            "spool_corrupt": spool.corrupt if spool else 0,
            # durable messages dropped from memory at the queue's bound: the spool could
            # not take them (storage_error) while the broker was away
            "lost": self._outbox.durable_overflowed,
            "possibly_lost_last_run": self.possibly_lost_last_run,
            "storage_error": self.storage_error,
            "storage_errors": self.storage_errors,
        }

    def _check_space(self) -> None:
        """Every ``RETRY_S``: report a full disk before an outage needs the spool.

        While the broker acks promptly nothing is written, so a full disk would stay
        unnoticed until the results of an outage have nowhere to go.
        """
        now = time.monotonic()
        if now < self._space_at:
            return
        self._space_at = now + RETRY_S
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return  # the next write reports what is wrong
        free = st.f_bavail * st.f_frsize
        if free < min(MIN_FREE_BYTES, self.max_bytes):
            if not self.storage_error:
                self._space_error = (
                    f"spool {self.directory}: disk full ({free} bytes free); "
                    "results are not durable"
                )
                logger.error("mqtt %s: %s", self.where, self._space_error)
                self.storage_error = self._space_error
        elif self._space_error:
            if self.storage_error == self._space_error:
                self.storage_error = ""
            self._space_error = ""

    def _store(self, msg: Outgoing) -> Position:
        """Append one message that is held only in memory (raises PublishError)."""
        position = self.spool.append(msg.topic, msg.payload, msg.qos, msg.retain)
        self.secured += 1
        self.spooled += 1
        self.storage_error = ""
        return position

    def _append(self, msg: Outgoing) -> bool:
        """:meth:`_store` a queued message; False (error recorded) if the disk refused."""
        try:
            self._store(msg)
        except PublishError as exc:
            self._failed(f"{exc}; keeping messages in memory")
            return False
        return True

    def _failed(self, error: str) -> None:
        """Record a storage error (shown in status and stats) and schedule a retry."""
        logger.error("mqtt %s: %s", self.where, error)
        self.storage_error = error
        self.storage_errors += 1
        self._retry_at = time.monotonic() + RETRY_S
