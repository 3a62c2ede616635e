"""Segment files of the spool: the record format, damage recovery, append and read.

A record is ``<4 bytes magic><u32 body length><u32 CRC-32 of length and body><body>``;
the body is ``<u8 flags (qos | retain << 2)><u16 topic length><topic utf-8><payload>``.
The magic lets a reader resynchronise after a damaged record: it searches for the next
magic whose record checks out, so one flipped byte costs one record, not the rest of
the segment. Segments are named ``{number:016d}.seg`` and only ever appended to (or
truncated back after a failed write); a segment with damage inside is rewritten once,
at open, without the damaged bytes. Segments of the previous format (``<u32 length><u32
CRC><body>``, no magic) are converted at open; their damage is counted the same way.
See :mod:`edge_agent.publishing.spool` for the durability policy built on this.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

from edge_agent.atomicfile import write_atomic
from edge_agent.errors import PublishError

logger = logging.getLogger(__name__)

MAGIC = b"\xd5ESR"  # as a little-endian length: 1.4 GB, never a legacy record's size
HEADER = struct.Struct("<4sII")
_LENGTH = struct.Struct("<I")
_LEGACY_HEADER = struct.Struct("<II")
_BODY_HEAD = struct.Struct("<BH")
_SUFFIX = ".seg"
_CURSOR = struct.Struct("<4sQQ")
_CURSOR_MAGIC = b"EAS1"


class Position(NamedTuple):
    """A record boundary: segment number and byte offset (ordered like the records)."""

    segment: int
    offset: int


class SpooledMessage(NamedTuple):
    """A message read back from the spool; ``position`` is the boundary after it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    position: Position


def encode_record(topic: str, payload: bytes, qos: int, retain: bool) -> bytes:
    """Serialize one message as a record (header + body)."""
    raw_topic = topic.encode("utf-8")
    body = _BODY_HEAD.pack(qos | (int(retain) << 2), len(raw_topic)) + raw_topic + payload
    return _frame(body)


def _frame(body: bytes | memoryview) -> bytes:
    """Magic, length and CRC (of the length and the body) in front of a body."""
    length = _LENGTH.pack(len(body))
    return MAGIC + length + _crc(length, body).to_bytes(4, "little") + bytes(body)


def _crc(length: bytes, body: bytes | memoryview) -> int:
    """CRC-32 over the length field and the body: a damaged length is caught too."""
    return zlib.crc32(body, zlib.crc32(length))


def decode_body(body: bytes) -> tuple[str, bytes, int, bool]:
    """Split a record body into (topic, payload, qos, retain)."""
    flags, topic_len = _BODY_HEAD.unpack_from(body)
    start = _BODY_HEAD.size
    topic = body[start : start + topic_len].decode("utf-8")
    return topic, bytes(body[start + topic_len :]), flags & 0x3, bool(flags & 0x4)


def encode_cursor(position: Position) -> bytes:
    """The ``cursor`` file: ``<4s magic><u64 segment><u64 offset><u32 CRC-32>``."""
    raw = _CURSOR.pack(_CURSOR_MAGIC, *position)
    return raw + zlib.crc32(raw).to_bytes(4, "little")


def decode_cursor(raw: bytes) -> Position | None:
    """The position in a ``cursor`` file; None if it is damaged."""
    body, crc = raw[:-4], raw[-4:]
    if len(body) == _CURSOR.size and zlib.crc32(body).to_bytes(4, "little") == crc:
        magic, segment, offset = _CURSOR.unpack(body)
        if magic == _CURSOR_MAGIC:
            return Position(segment, offset)
    return None


def segment_numbers(directory: Path) -> list[int]:
    """Numbers of the segment files in a directory, ascending."""
    names = (p.name[: -len(_SUFFIX)] for p in directory.glob("*" + _SUFFIX))
    return sorted(int(n) for n in names if n.isdigit())


class ScanResult(NamedTuple):
    """What :func:`scan` found from its start offset on."""

    size: int  # end offset of the last valid record (the segment's new size)
    count: int  # valid records
    live: int  # their bytes
    lost: int  # damaged stretches skipped or cut off (each at least one message)


def _record_end(data: bytes, pos: int) -> int | None:
    """End offset of the valid record at ``pos``, or None if none starts there."""
    if pos + HEADER.size > len(data) or data[pos : pos + 4] != MAGIC:
        return None
    _magic, length, crc = HEADER.unpack_from(data, pos)
    end = pos + HEADER.size + length
    if length < _BODY_HEAD.size or end > len(data):
        return None
    body = memoryview(data)[pos + HEADER.size : end]
    return end if _crc(data[pos + 4 : pos + 8], body) == crc else None


def _next_record(data: bytes, pos: int) -> int | None:
    """Offset of the next valid record after a damaged one at ``pos`` (resync)."""
    found = data.find(MAGIC, pos + 1)
    while found >= 0:
        if _record_end(data, found) is not None:
            return found
        found = data.find(MAGIC, found + 1)
    return None


def _legacy_records(data: bytes, start: int) -> tuple[list[bytes], bool]:
    """Bodies of previous-format records from ``start``; True if damage cut them short."""
    bodies, pos = [], start
    while pos + _LEGACY_HEADER.size <= len(data):
        length, crc = _LEGACY_HEADER.unpack_from(data, pos)
        end = pos + _LEGACY_HEADER.size + length
        if length < _BODY_HEAD.size or end > len(data):
            break
        body = data[pos + _LEGACY_HEADER.size : end]
        if zlib.crc32(body) != crc:
            break
        bodies.append(body)
        pos = end
    return bodies, pos < len(data)


def is_legacy(path: Path) -> bool:
    """True for a segment of the previous format (no magic; its first record checks out)."""
    with open(path, "rb") as fh:
        head = fh.read(_LEGACY_HEADER.size)
        if len(head) < _LEGACY_HEADER.size or head[:4] == MAGIC:
            return False
        length, crc = _LEGACY_HEADER.unpack(head)
        body = fh.read(length)
    return len(body) == length >= _BODY_HEAD.size and zlib.crc32(body) == crc


def convert_legacy(path: Path, start: int) -> int:
    """Rewrite a previous-format segment in the current format from ``start`` on.

    The records before ``start`` (already delivered) are left out, so the caller must
    have moved its cursor to offset 0 of this segment first. Returns the number of
    damaged stretches (the old format cannot resync: everything after damage is lost).
    """
    data = path.read_bytes()
    bodies, damaged = _legacy_records(data, min(start, len(data)))
    if damaged:
        logger.warning(
            "spool %s: %s (previous format) is damaged after %d records; the rest is lost",
            path.parent,
            path.name,
            len(bodies),
        )
    write_atomic(path, b"".join(_frame(b) for b in bodies), mode=0o600)
    logger.info("spool %s: converted %s to the current record format", path.parent, path.name)
    return int(damaged)


def scan(path: Path, start: int) -> ScanResult:
    """Check the records of a segment from ``start``; skip damaged ones, cut a torn tail.

    A damaged record in the middle is skipped by resyncing to the next valid record (the
    segment is rewritten without it); damage at the end (a write torn by a power cut) is
    truncated. Each damaged stretch is counted in :attr:`ScanResult.lost`.

    Args:
        path: the segment file.
        start: offset of the first record to check.
    """
    data = path.read_bytes()
    if start > len(data):
        return ScanResult(len(data), 0, 0, 0)
    pos, good, lost, skipped = start, [], 0, 0
    while pos < len(data):
        end = _record_end(data, pos)
        if end is not None:
            good.append((pos, end))
            pos = end
            continue
        lost += 1
        following = _next_record(data, pos)
        bad_end = len(data) if following is None else following
        logger.warning(
            "spool %s: skipping %d bytes of a torn or corrupt record at offset %d of %s",
            path.parent,
            bad_end - pos,
            pos,
            path.name,
        )
        skipped += bad_end - pos
        pos = bad_end
    live = sum(end - begin for begin, end in good)
    if not lost:
        return ScanResult(pos, len(good), live, 0)
    if not good or good[-1][1] == start + live:
        # Damage only at the end: cut it off (cheap, and what a torn append looks like).
        with open(path, "r+b") as fh:
            fh.truncate(start + live)
            os.fsync(fh.fileno())
    else:
        kept = b"".join(data[begin:end] for begin, end in good)
        write_atomic(path, data[:start] + kept, mode=0o600)
    return ScanResult(start + live, len(good), live, lost)


class SegmentFiles:
    """The open descriptors of a spool directory: the tail for appends, one for reads.

    Args:
        directory: the spool directory.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.sealed = False
        self._tail: tuple[int, int] | None = None  # (segment, fd)
        self._read: tuple[int, int] | None = None

    def path(self, segment: int) -> Path:
        """File name of a segment."""
        return self.directory / f"{segment:016d}{_SUFFIX}"

    def create(self, segment: int) -> None:
        """Start a new empty tail segment and make its directory entry durable.

        Raises:
            OSError: the file or the directory sync failed.
        """
        self._close_tail()
        fd = os.open(self.path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._tail, self.sealed = (segment, fd), False
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def write(self, segment: int, start: int, record: bytes) -> None:
        """Append a record to ``segment`` (currently ``start`` bytes long), all or nothing.

        Raises:
            PublishError: the write failed (e.g. disk full); the segment was truncated
                back to ``start``, or sealed if even that failed.
        """
        if self._tail is None or self._tail[0] != segment:
            self._close_tail()
            self._tail = (segment, os.open(self.path(segment), os.O_WRONLY | os.O_APPEND))
        fd = self._tail[1]
        view = memoryview(record)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:
                # The torn bytes stay at the end of this segment: seal it, so later
                # records go to a fresh segment and the next open cuts only this tail.
                logger.error("spool %s: cannot roll back a failed write", self.directory)
                self.sealed = True
            reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
            raise PublishError(
                f"spool {self.directory}: cannot write segment {segment}: {reason}"
            ) from exc

    def sync(self) -> None:
        """fsync the tail segment.

        Raises:
            OSError: the storage reported an error.
        """
        if self._tail is not None:
            os.fsync(self._tail[1])

    def read(self, pos: Position, end: int) -> tuple[int, bytes | None]:
        """The record at ``pos``: (record size, body). Unbuffered reads: never stale.

        A record damaged since the spool was opened (bit rot) is checked like at open:
        the body is None and the size reaches the next valid record (or the end). A
        segment the storage fails to read (EIO from a failing SD card) is lost from
        ``pos`` to ``end`` (its size) the same way, loudly: failing every read instead
        would hold back everything behind it for good.
        """
        try:
            return self._record(pos)
        except OSError as exc:
            self._close_read()
            logger.error(
                "spool %s: segment %d unreadable from byte %d (%s): its records are lost",
                self.directory, pos.segment, pos.offset, exc.strerror or exc,
            )  # fmt: skip
            return max(1, end - pos.offset), None

    def _record(self, pos: Position) -> tuple[int, bytes | None]:
        """:meth:`read`, letting the storage's OSError through."""
        if self._read is None or self._read[0] != pos.segment:
            self._close_read()
            self._read = (pos.segment, os.open(self.path(pos.segment), os.O_RDONLY))
        fd = self._read[1]
        rest = os.fstat(fd).st_size - pos.offset
        head = os.pread(fd, HEADER.size, pos.offset)
        if len(head) == HEADER.size:
            magic, length, crc = HEADER.unpack(head)
            if magic == MAGIC and length <= rest - HEADER.size:  # never a huge read
                body = os.pread(fd, length, pos.offset + HEADER.size)
                if _crc(head[4:8], body) == crc:
                    return HEADER.size + length, body
        following = _next_record(os.pread(fd, rest, pos.offset), 0)
        logger.error("spool %s: damaged record at %s", self.directory, pos)
        return (rest if following is None else following), None

    def delete(self, segment: int) -> None:
        """Unlink a fully consumed segment (never the tail)."""
        if self._read is not None and self._read[0] == segment:
            self._close_read()
        try:
            self.path(segment).unlink()
        except OSError as exc:
            logger.error("spool %s: cannot delete %s: %s", self.directory, segment, exc.strerror)

    def close(self) -> None:
        """Close every descriptor."""
        self._close_tail()
        self._close_read()

    def _close_tail(self) -> None:
        """Close the tail descriptor."""
        if self._tail is not None:
            os.close(self._tail[1])
            self._tail = None

    def _close_read(self) -> None:
        """Close the read descriptor."""
        if self._read is not None:
            os.close(self._read[1])
            self._read = None
