"""A bounded, crash-safe on-disk spool for MQTT messages the broker has not acknowledged.

Format
    Numbered, append-only segment files of framed, CRC-checked records and a ``cursor``
    file (written atomically, with its own CRC) holding the position of the first record
    not yet committed (:mod:`edge_agent.publishing.segments`). ``spool.lock`` is
    ``flock``-ed so two processes never share a spool.

Crash safety
    Records are written with a single ``os.write`` (no user-space buffer), so a *process*
    crash loses nothing already appended. On open, records from the cursor on are checked;
    a damaged one (torn by a power cut, a flipped bit) is skipped by resyncing on the next
    record's magic and counted in :attr:`Spool.corrupt`. Previous-format segments are
    converted. A failed write (e.g. ENOSPC) is rolled back with ``ftruncate``; if even
    that fails the segment is sealed and the next append starts a new one.

fsync policy (SD cards: every fsync costs latency and flash wear)
    The tail segment is fsynced every ``sync_every`` records (default 32), when
    ``sync_interval`` seconds (default 1 s) have passed since the first unsynced record
    (checked on append and by :meth:`Spool.sync_if_due`, which the owner calls
    periodically), when a segment is rolled, and on :meth:`Spool.flush` / :meth:`Spool.close`.
    A power cut loses at most the last ``sync_interval`` or 32 appends. The cursor is
    persisted every ``cursor_every`` commits (default 64), when a segment is finished and
    on flush/close; after a crash up to that many already-delivered messages are replayed
    again (at-least-once delivery: duplicates, never loss or reordering).

Bound
    ``max_bytes`` bounds the bytes of records not yet committed. Appending past it drops
    the *oldest* records (counted in :attr:`Spool.dropped`, with the damaged ones). Disk
    usage is at most ``max_bytes`` plus one segment (the partly committed head segment).

A :class:`Spool` is not thread-safe: one owner (the publisher thread) calls it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from edge_agent.atomicfile import remove_leftovers, write_atomic
from edge_agent.errors import ConfigError, PublishError
from edge_agent.publishing.segments import (
    Position,
    SegmentFiles,
    SpooledMessage,
    convert_legacy,
    decode_body,
    decode_cursor,
    encode_cursor,
    encode_record,
    is_legacy,
    scan,
    segment_numbers,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BYTES", "Position", "Spool", "SpooledMessage", "encode_record"]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class Spool:
    """Bounded FIFO of MQTT messages on disk, committed only after the broker acked them.

    Args:
        directory: the spool directory (created if missing).
        max_bytes: bound on uncommitted record bytes; the oldest are dropped beyond it.
        segment_bytes: size at which a new segment file is started
            (default: ``max_bytes / 16`` clamped to 64 KiB..4 MiB).
        sync_every: fsync the tail after this many appended records.
        sync_interval: fsync the tail when its oldest unsynced record is this many seconds old.
        cursor_every: persist the cursor after this many commits.

    Raises:
        ConfigError: ``max_bytes`` is not positive.
        PublishError: the directory cannot be created or is locked by another process.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        segment_bytes: int | None = None,
        sync_every: int = 32,
        sync_interval: float = 1.0,
        cursor_every: int = 64,
    ):
        if max_bytes <= 0:
            raise ConfigError(f"expected a positive size, got {max_bytes}", key="spool_max_bytes")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(max(max_bytes // 16, 64 * 1024), 4 << 20)
        self._sync_every, self._sync_interval = sync_every, sync_interval
        self._cursor_every = cursor_every
        self.dropped = self.corrupt = self._count = self._live = 0
        self._sizes: dict[int, int] = {}  # segment -> bytes, in segment order
        self._damaged: set[Position] = set()  # records found damaged after open
        self._files = SegmentFiles(self.directory)
        self._unsynced = self._uncommitted_cursor = 0
        self._unsynced_since = 0.0
        self._lock_fd: int | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / "spool.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._cursor = self._recover()
        except BlockingIOError as exc:
            self._close_lock()
            raise PublishError(f"spool {self.directory} is in use by another process") from exc
        except OSError as exc:
            self._close_lock()
            raise PublishError(f"spool {self.directory}: cannot open: {exc.strerror}") from exc

    # -- public API -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Number of messages appended and not yet committed (or dropped)."""
        return self._count

    @property
    def pending_bytes(self) -> int:
        """Bytes of those messages on disk (what ``max_bytes`` bounds)."""
        return self._live

    def append(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Position:
        """Append one message, dropping the oldest ones if the bound would be exceeded.

        Args:
            topic: MQTT topic.
            payload: message bytes.
            qos: QoS to publish it with on replay (0..2).
            retain: retain flag to publish it with on replay.

        Returns:
            The position after the new record.

        Raises:
            PublishError: the message is larger than the whole spool, or the disk write
                failed (e.g. disk full); records already spooled are untouched.
        """
        record = encode_record(topic, payload, qos, retain)
        if len(record) > self.max_bytes:
            raise PublishError(
                f"spool {self.directory}: message on {topic} of {len(record)} bytes "
                f"exceeds the spool size of {self.max_bytes} bytes"
            )
        while self._live + len(record) > self.max_bytes and self._count:
            self._advance_one()
            self.dropped += 1
        if self._uncommitted_cursor >= self._cursor_every:
            self._save_cursor()
        try:
            segment = self._tail_for(len(record))
            start = self._sizes[segment]
            self._files.write(segment, start, record)
        except OSError as exc:
            raise PublishError(f"spool {self.directory}: cannot append: {exc.strerror}") from exc
        self._sizes[segment] = start + len(record)
        self._count += 1
        self._live += len(record)
        if not self._unsynced:
            self._unsynced_since = time.monotonic()
        self._unsynced += 1
        try:
            self.sync_if_due(force=self._unsynced >= self._sync_every)
        except PublishError as exc:
            # The record is written (in the page cache); raising would make the caller
            # spool it a second time. The storage error is reported, not hidden.
            logger.error("%s", exc)
        return Position(segment, start + len(record))

    def read(self, limit: int, after: Position | None = None) -> list[SpooledMessage]:
        """Read up to ``limit`` uncommitted messages in order without consuming them.

        Args:
            limit: maximum number of messages.
            after: continue after this position (a previous message's ``position``);
                None, or a position already committed or dropped, starts at the oldest.

        Returns:
            The messages, oldest first.
        """
        pos = self._cursor if after is None or after < self._cursor else after
        out: list[SpooledMessage] = []
        while len(out) < limit:
            pos = self._normalize(pos)
            if pos is None:
                break
            size, body = self._files.read(pos, self._sizes[pos.segment])
            if body is None and pos not in self._damaged:  # skipped, counted once
                self._damaged.add(pos)
                self.corrupt, self.dropped = self.corrupt + 1, self.dropped + 1
            pos = Position(pos.segment, pos.offset + size)
            if body is not None:
                out.append(SpooledMessage(*decode_body(body), pos))
        return out

    def commit(self, position: Position) -> None:
        """Mark every message up to ``position`` as delivered (no-op if already past it).

        Args:
            position: the ``position`` of the last delivered message.
        """
        if not self._cursor < position:
            return
        while self._cursor < position and self._count:
            self._advance_one()
        if self._uncommitted_cursor >= self._cursor_every:
            self._save_cursor()

    def sync_if_due(self, *, force: bool = False) -> None:
        """fsync the tail if its oldest unsynced record is older than ``sync_interval``.

        Args:
            force: fsync now if anything is unsynced.

        Raises:
            PublishError: fsync failed (an I/O error of the storage).
        """
        if not self._unsynced:
            return
        if force or time.monotonic() - self._unsynced_since >= self._sync_interval:
            try:
                self._sync_tail()
            except OSError as exc:
                raise PublishError(f"spool {self.directory}: fsync failed: {exc.strerror}") from exc

    def flush(self) -> None:
        """fsync the tail segment and persist the cursor.

        Raises:
            PublishError: fsync failed.
        """
        self.sync_if_due(force=True)
        if self._uncommitted_cursor:
            self._save_cursor()

    def close(self) -> None:
        """Flush and release the files and the directory lock (idempotent)."""
        if self._lock_fd is None:
            return
        try:
            self.flush()
        except PublishError as exc:
            logger.error("%s", exc)
        self._files.close()
        self._close_lock()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------

    def _tail(self) -> int:
        """The newest segment (appends go there)."""
        return next(reversed(self._sizes))

    def _after(self, segment: int) -> int | None:
        """The segment following ``segment``, if any."""
        return next((s for s in self._sizes if s > segment), None)

    def _close_lock(self) -> None:
        """Release the directory lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _recover(self) -> Position:
        """Load the cursor, drop finished segments, cut torn records, count what is left."""
        if leftovers := remove_leftovers(self.directory):  # under the lock: ours alone
            logger.info("spool %s: removed %s of interrupted writes", self.directory, leftovers)
        segments = segment_numbers(self.directory)
        cursor = self._load_cursor() or Position(0, 0)
        for segment in segments:
            if segment < cursor.segment:
                self._files.path(segment).unlink()  # consumed before the cursor was saved
                continue
            start = cursor.offset if segment == cursor.segment else 0
            path = self._files.path(segment)
            if is_legacy(path):
                if start:  # cursor first: a crash mid-conversion replays, never misaligns
                    self._cursor = cursor = Position(segment, 0)
                    self._save_cursor()
                self.corrupt += convert_legacy(path, start)
                start = 0
            found = scan(path, start)
            if segment == cursor.segment and cursor.offset > found.size:
                cursor = Position(segment, found.size)  # the data behind the cursor was lost
            self._sizes[segment] = found.size
            self._count += found.count
            self._live += found.live
            self.corrupt += found.lost
        self.dropped += self.corrupt
        if self.corrupt:
            logger.error("spool %s: %d damaged records lost", self.directory, self.corrupt)
        if not self._sizes:
            fresh = max([*segments, cursor.segment]) + 1
            self._files.create(fresh)
            self._sizes[fresh] = 0
        first = next(iter(self._sizes))
        if cursor.segment < first:
            cursor = Position(first, 0)  # the cursor's segment was already deleted
        if self._count:
            logger.info(
                "spool %s: %d messages (%d bytes) waiting from a previous run",
                self.directory,
                self._count,
                self._live,
            )
        return cursor

    def _load_cursor(self) -> Position | None:
        """Read the persisted cursor; None if missing or corrupt (replay from the start)."""
        try:
            cursor = decode_cursor((self.directory / "cursor").read_bytes())
        except FileNotFoundError:
            return None
        if cursor is None:
            logger.warning(
                "spool %s: corrupt cursor, replaying from the oldest record", self.directory
            )
        return cursor

    def _save_cursor(self) -> None:
        """Atomically persist the cursor (write temp, fsync, rename, fsync the directory).

        A failure is only logged: the cursor stays in memory, and an older cursor on disk
        means duplicates after a crash, never loss.
        """
        try:
            write_atomic(self.directory / "cursor", encode_cursor(self._cursor), mode=0o600)
        except OSError as exc:
            logger.warning("spool %s: cannot save the cursor: %s", self.directory, exc.strerror)
            return
        self._uncommitted_cursor = 0

    def _tail_for(self, record_len: int) -> int:
        """Return the segment to append to, rolling to a new one when full or sealed."""
        tail = self._tail()
        size = self._sizes[tail]
        if self._files.sealed or (size and size + record_len > self.segment_bytes):
            self._sync_tail()
            self._files.create(tail + 1)
            self._sizes[tail + 1] = 0
            return tail + 1
        return tail

    def _sync_tail(self) -> None:
        """fsync the tail segment if anything is unsynced."""
        unsynced, self._unsynced = self._unsynced, 0  # a failed fsync is not worth retrying
        if unsynced:
            self._files.sync()

    def _normalize(self, pos: Position) -> Position | None:
        """Move a position off the end of a finished segment; None past the newest record."""
        while pos.offset >= self._sizes.get(pos.segment, 0):
            following = self._after(pos.segment)
            if following is None:
                return None
            pos = Position(following, 0)
        return pos

    def _advance_one(self) -> None:
        """Move the cursor past the oldest record; delete segments it leaves behind."""
        pos = self._normalize(self._cursor)
        if pos is None:
            return
        size, _body = self._files.read(pos, self._sizes[pos.segment])
        self._cursor = Position(pos.segment, pos.offset + size)
        self._count -= 1
        self._live -= size
        if self._normalize(self._cursor) is None:  # all consumed: a damaged stretch of
            self._count = self._live = 0  # several records counted as one must not linger
        self._uncommitted_cursor += 1
        finished = [s for s in self._sizes if s < pos.segment]
        if self._cursor.offset >= self._sizes[pos.segment] and pos.segment != self._tail():
            finished.append(pos.segment)
            self._cursor = Position(self._after(pos.segment), 0)
        if finished:
            # Persist the cursor first: a crash between the two steps then finds a
            # cursor past a segment that still exists, which recovery deletes.
            self._save_cursor()
            for segment in finished:
                self._delete_segment(segment)

    def _delete_segment(self, segment: int) -> None:
        """Forget and unlink a fully consumed segment."""
        del self._sizes[segment]
        self._files.delete(segment)
