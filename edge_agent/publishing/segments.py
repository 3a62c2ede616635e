"""Segment files of the spool: the record format, torn-tail recovery, append and read.

A record is ``<u32 body length><u32 CRC-32 of body><body>``; the body is
``<u8 flags (qos | retain << 2)><u16 topic length><topic utf-8><payload>``. Segments are
named ``{number:016d}.seg`` and only ever appended to (or truncated back after a failed
write). See :mod:`edge_agent.publishing.spool` for the durability policy built on this.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

from edge_agent.errors import PublishError

logger = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
_BODY_HEAD = struct.Struct("<BH")
_SUFFIX = ".seg"


class Position(NamedTuple):
    """A record boundary: segment number and byte offset (ordered like the records)."""

    segment: int
    offset: int


def encode_record(topic: str, payload: bytes, qos: int, retain: bool) -> bytes:
    """Serialize one message as a record (header + body)."""
    raw_topic = topic.encode("utf-8")
    body = _BODY_HEAD.pack(qos | (int(retain) << 2), len(raw_topic)) + raw_topic + payload
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def decode_body(body: bytes) -> tuple[str, bytes, int, bool]:
    """Split a record body into (topic, payload, qos, retain)."""
    flags, topic_len = _BODY_HEAD.unpack_from(body)
    start = _BODY_HEAD.size
    topic = body[start : start + topic_len].decode("utf-8")
    return topic, bytes(body[start + topic_len :]), flags & 0x3, bool(flags & 0x4)


def segment_numbers(directory: Path) -> list[int]:
    """Numbers of the segment files in a directory, ascending."""
    names = (p.name[: -len(_SUFFIX)] for p in directory.glob("*" + _SUFFIX))
    return sorted(int(n) for n in names if n.isdigit())


def scan(path: Path, start: int) -> tuple[int, int, int]:
    """Check the records of a segment from ``start``; cut off a torn or corrupt tail.

    Args:
        path: the segment file.
        start: offset of the first record to check.

    Returns:
        (end offset of the last valid record, number of valid records, their bytes).
    """
    data = path.read_bytes()
    if start > len(data):
        return len(data), 0, 0
    pos, count = start, 0
    while pos + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if length < _BODY_HEAD.size or end > len(data):
            break
        if zlib.crc32(data[pos + HEADER.size : end]) != crc:
            break
        pos, count = end, count + 1
    if pos < len(data):
        logger.warning(
            "spool %s: discarding %d bytes of a torn or corrupt record at the end of %s",
            path.parent,
            len(data) - pos,
            path.name,
        )
        with open(path, "r+b") as fh:
            fh.truncate(pos)
            os.fsync(fh.fileno())
    return pos, count, pos - start


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

    def read(self, pos: Position) -> tuple[int, bytes]:
        """The record at ``pos``: (record size, body). Unbuffered reads: never stale."""
        if self._read is None or self._read[0] != pos.segment:
            self._close_read()
            self._read = (pos.segment, os.open(self.path(pos.segment), os.O_RDONLY))
        fd = self._read[1]
        length, _crc = HEADER.unpack(os.pread(fd, HEADER.size, pos.offset))
        return HEADER.size + length, os.pread(fd, length, pos.offset + HEADER.size)

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
