"""The on-disk spool: order, commit, restart, torn writes, bound, disk full."""

from __future__ import annotations

import errno
import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import PublishError
from edge_agent.publishing.spool import Spool, encode_record

TOPIC = "edge/cam1/results"


def _payloads(spool: Spool, limit: int = 10_000) -> list[bytes]:
    return [m.payload for m in spool.read(limit)]


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def _fill(spool: Spool, count: int, start: int = 0) -> list[bytes]:
    sent = [b"msg-%04d" % i for i in range(start, start + count)]
    for p in sent:
        spool.append(TOPIC, p, qos=1)
    return sent


def test_append_read_commit_in_order(tmp_path):
    with Spool(tmp_path) as spool:
        sent = _fill(spool, 5)
        spool.append("edge/cam1/status", b"x", qos=0, retain=True)
        msgs = spool.read(10)
        assert [m.payload for m in msgs] == [*sent, b"x"]
        assert msgs[0].topic == TOPIC and msgs[0].qos == 1 and msgs[0].retain is False
        assert (msgs[-1].topic, msgs[-1].qos, msgs[-1].retain) == ("edge/cam1/status", 0, True)
        # read() does not consume; `after` pages through.
        assert [m.payload for m in spool.read(2, after=msgs[1].position)] == sent[2:4]
        spool.commit(msgs[2].position)
        assert spool.pending == 3
        assert _payloads(spool) == [*sent[3:], b"x"]
        spool.commit(msgs[1].position)  # going backwards is a no-op
        assert spool.pending == 3
        spool.commit(msgs[-1].position)
        assert spool.pending == 0 and spool.pending_bytes == 0
        assert spool.read(10) == []


def test_restart_rereads_uncommitted(tmp_path):
    with Spool(tmp_path) as spool:
        sent = _fill(spool, 10)
        spool.commit(spool.read(4)[-1].position)
    with Spool(tmp_path) as spool:
        assert spool.pending == 6
        assert _payloads(spool) == sent[4:]
        more = _fill(spool, 2, start=10)
    with Spool(tmp_path) as spool:
        assert _payloads(spool) == sent[4:] + more


def test_second_owner_is_refused(tmp_path):
    with Spool(tmp_path), pytest.raises(PublishError, match="in use by another process"):
        Spool(tmp_path)


_CRASHER = """
import os, sys
from edge_agent.publishing.spool import Spool
spool = Spool(sys.argv[1], cursor_every=1000)
for i in range(20):
    spool.append("t", b"m%02d" % i)
spool.commit(spool.read(5)[-1].position)
os._exit(0)  # no close(): no flush, no cursor save
"""


def test_process_crash_loses_nothing_and_replays_uncommitted(tmp_path):
    subprocess.run([sys.executable, "-c", _CRASHER, str(tmp_path)], check=True, timeout=30)
    with Spool(tmp_path) as spool:
        # The commit of 5 was not persisted (cursor_every=1000): at-least-once, so all
        # 20 come back, in order; nothing was lost.
        assert _payloads(spool) == [b"m%02d" % i for i in range(20)]


def test_torn_last_record_is_discarded_earlier_ones_kept(tmp_path, caplog):
    with Spool(tmp_path) as spool:
        sent = _fill(spool, 3)
    seg = _segments(tmp_path)[-1]
    size = seg.stat().st_size
    with open(seg, "ab") as fh:  # power cut halfway through a fourth record
        fh.write(encode_record(TOPIC, b"torn-record-payload", 1, False)[:15])
    with caplog.at_level(logging.WARNING), Spool(tmp_path) as spool:
        assert _payloads(spool) == sent
        assert seg.stat().st_size == size
        spool.append(TOPIC, b"after")
        assert _payloads(spool) == [*sent, b"after"]
    assert "skipping 15 bytes" in caplog.text


def test_crc_mismatch_in_last_record_is_discarded(tmp_path):
    with Spool(tmp_path) as spool:
        sent = _fill(spool, 3)
    seg = _segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the last payload
    seg.write_bytes(bytes(data))
    with Spool(tmp_path) as spool:
        assert _payloads(spool) == sent[:2]


def test_zero_filled_tail_is_discarded(tmp_path):
    with Spool(tmp_path) as spool:
        sent = _fill(spool, 2)
    seg = _segments(tmp_path)[-1]
    with open(seg, "ab") as fh:  # what some file systems show after a power cut
        fh.write(b"\0" * 64)
    with Spool(tmp_path) as spool:
        assert _payloads(spool) == sent


def test_corrupt_cursor_replays_everything_left(tmp_path):
    with Spool(tmp_path, segment_bytes=4096) as spool:
        sent = _fill(spool, 6)
        spool.commit(spool.read(3)[-1].position)
    (tmp_path / "cursor").write_bytes(b"garbage")
    with Spool(tmp_path) as spool:
        assert _payloads(spool) == sent


def test_bound_drops_oldest_and_counts(tmp_path):
    # 4 magic + 4 length + 4 CRC + 3 body head + 17 topic + 8 payload = 40 bytes
    record = len(encode_record(TOPIC, b"msg-0000", 1, False))
    assert record == 40
    with Spool(tmp_path, max_bytes=record * 40, segment_bytes=record * 8) as spool:
        sent = _fill(spool, 50)
        assert spool.dropped == 10
        assert spool.pending == 40
        assert spool.pending_bytes == record * 40
        assert _payloads(spool) == sent[10:]
        # At most max_bytes plus the partly consumed head segment on disk.
        on_disk = sum(p.stat().st_size for p in _segments(tmp_path))
        assert on_disk <= record * 40 + record * 8
    with Spool(tmp_path, max_bytes=record * 40, segment_bytes=record * 8) as spool:
        assert _payloads(spool) == sent[10:]


def test_commit_of_dropped_position_is_harmless(tmp_path):
    record = len(encode_record(TOPIC, b"msg-0000", 1, False))
    with Spool(tmp_path, max_bytes=record * 4) as spool:
        sent = _fill(spool, 4)
        inflight = spool.read(2)
        _fill(spool, 2, start=4)  # drops the two in flight
        assert spool.dropped == 2
        spool.commit(inflight[-1].position)
        assert spool.pending == 4
        assert [m.payload for m in spool.read(10, after=inflight[0].position)] == [
            *sent[2:],
            b"msg-0004",
            b"msg-0005",
        ]


def test_message_larger_than_spool_is_refused(tmp_path):
    with Spool(tmp_path, max_bytes=1024) as spool:
        _fill(spool, 1)
        with pytest.raises(PublishError, match="exceeds the spool size of 1024 bytes"):
            spool.append(TOPIC, b"x" * 2000)
        assert spool.pending == 1 and spool.dropped == 0


def test_segments_roll_and_consumed_ones_are_deleted(tmp_path):
    with Spool(tmp_path, segment_bytes=40 * 4) as spool:
        sent = _fill(spool, 10)
        assert len(_segments(tmp_path)) == 3  # 4 + 4 + 2 records
        spool.commit(spool.read(9)[-1].position)
        assert len(_segments(tmp_path)) == 1
        assert _payloads(spool) == sent[9:]
    with Spool(tmp_path, segment_bytes=40 * 4) as spool:
        assert _payloads(spool) == sent[9:]


def test_a_segment_the_storage_cannot_read_is_lost_loudly_not_failing_every_read(
    tmp_path, monkeypatch, caplog
):
    """EIO from a failing SD card on one segment: its records are counted lost and the
    rest are read and committed (an OSError from every read held them back for good)."""
    with Spool(tmp_path, segment_bytes=40 * 4) as spool:
        sent = _fill(spool, 10)  # segments of 4 + 4 + 2 records
        bad = str(_segments(tmp_path)[1])
        real_pread = os.pread

        def pread(fd, size, offset):
            if os.readlink(f"/proc/self/fd/{fd}") == bad:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real_pread(fd, size, offset)

        monkeypatch.setattr(os, "pread", pread)
        msgs = spool.read(100)
        assert [m.payload for m in msgs] == [*sent[:4], *sent[8:]]
        assert (spool.corrupt, spool.dropped) == (1, 1)
        assert "unreadable from byte 0 (Input/output error)" in caplog.text
        spool.commit(msgs[-1].position)
        assert (spool.pending, spool.pending_bytes) == (0, 0)
        assert spool.read(10) == []


def _fail_segment_writes(monkeypatch, *, partial: bool) -> None:
    """Make writes to spool segment files fail with ENOSPC (optionally after half a write)."""
    real_write = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            if partial and len(data) > 1:
                real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("partial", [False, True], ids=["nothing-written", "half-written"])
def test_disk_full_raises_and_keeps_spooled_data(tmp_path, monkeypatch, partial):
    with Spool(tmp_path) as spool:
        sent = _fill(spool, 3)
        size = _segments(tmp_path)[-1].stat().st_size
        with monkeypatch.context() as m:
            _fail_segment_writes(m, partial=partial)
            with pytest.raises(PublishError, match="disk full"):
                spool.append(TOPIC, b"lost")
        assert _segments(tmp_path)[-1].stat().st_size == size  # rolled back
        assert spool.pending == 3
        spool.append(TOPIC, b"next")
        assert _payloads(spool) == [*sent, b"next"]
    with Spool(tmp_path) as spool:
        assert _payloads(spool) == [*sent, b"next"]


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 120)),
        st.tuples(st.just("commit"), st.integers(1, 5)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_behaves_like_a_bounded_fifo(tmp_path_factory, ops):
    """Against a list model: order, bound with oldest dropped, commits, reopen."""
    directory = tmp_path_factory.mktemp("spool")
    kw = {"max_bytes": 1024, "segment_bytes": 256, "cursor_every": 1}
    spool = Spool(directory, **kw)
    model: list[bytes] = []
    dropped = 0
    try:
        for n, (op, arg) in enumerate(ops):
            if op == "append":
                payload = b"%03d" % n + b"p" * arg
                size = len(encode_record("t", payload, 1, False))
                while (
                    model and sum(len(encode_record("t", p, 1, False)) for p in model) + size > 1024
                ):
                    model.pop(0)
                    dropped += 1
                spool.append("t", payload)
                model.append(payload)
            elif op == "commit" and model:
                batch = spool.read(arg)
                spool.commit(batch[-1].position)
                del model[: len(batch)]
            elif op == "reopen":
                spool.close()
                spool = Spool(directory, **kw)
                dropped = spool.dropped
            assert _payloads(spool) == model
            assert spool.dropped == dropped
            assert spool.pending == len(model)
    finally:
        spool.close()


def test_fsync_error_is_logged_and_the_record_kept(tmp_path, monkeypatch, caplog):
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)

    with Spool(tmp_path, sync_every=1) as spool:
        with monkeypatch.context() as m, caplog.at_level(logging.ERROR):
            m.setattr(os, "fsync", fsync)
            spool.append(TOPIC, b"kept")  # must not raise: the caller would spool it twice
        assert "fsync failed: Input/output error" in caplog.text
        assert _payloads(spool) == [b"kept"]


def _legacy_record(topic: str, payload: bytes) -> bytes:
    """A record of the previous format: ``<u32 length><u32 CRC of body><body>``."""
    raw = topic.encode()
    body = struct.pack("<BH", 1, len(raw)) + raw + payload
    return struct.pack("<II", len(body), zlib.crc32(body)) + body


def test_flipped_byte_mid_segment_costs_one_record_and_is_counted(tmp_path, caplog):
    with Spool(tmp_path) as spool:
        sent = _fill(spool, 120)
        offset = spool.read(60)[-2].position.offset  # start of record 60 (1-based)
    seg = _segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[offset + 20] ^= 0x01  # one flipped bit in record 60's topic
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), Spool(tmp_path) as spool:
        got = _payloads(spool)
        assert got == sent[:59] + sent[60:]
        assert (spool.corrupt, spool.dropped, spool.pending) == (1, 1, 119)
        spool.append(TOPIC, b"after")
        assert _payloads(spool)[-1] == b"after"
    assert "skipping 40 bytes" in caplog.text
    with Spool(tmp_path) as spool:  # rewritten without the damage: clean from now on
        assert spool.corrupt == 0 and _payloads(spool) == [*got, b"after"]


def test_damaged_length_field_resyncs_on_the_next_record(tmp_path):
    with Spool(tmp_path) as spool:
        sent = _fill(spool, 10)
        offset = spool.read(3)[-2].position.offset  # record 3
    seg = _segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[offset + 5] = 0xFF  # its length now points far past the end of the file
    seg.write_bytes(bytes(data))
    with Spool(tmp_path) as spool:
        assert _payloads(spool) == sent[:2] + sent[3:]
        assert spool.corrupt == 1


def test_torn_tail_is_counted(tmp_path):
    with Spool(tmp_path) as spool:
        sent = _fill(spool, 3)
    with open(_segments(tmp_path)[-1], "ab") as fh:
        fh.write(encode_record(TOPIC, b"torn", 1, False)[:10])
    with Spool(tmp_path) as spool:
        assert _payloads(spool) == sent and spool.corrupt == 1


def test_previous_format_is_converted_and_its_damage_counted(tmp_path):
    tmp_path.joinpath("0000000000000001.seg").write_bytes(
        b"".join(_legacy_record(TOPIC, b"old-%d" % i) for i in range(5))
    )
    damaged = bytearray(b"".join(_legacy_record(TOPIC, b"old2-%d" % i) for i in range(4)))
    damaged[len(damaged) // 2] ^= 0xFF  # the old format cannot resync: records 3-4 go
    tmp_path.joinpath("0000000000000002.seg").write_bytes(bytes(damaged))
    with Spool(tmp_path) as spool:
        assert _payloads(spool) == [b"old-%d" % i for i in range(5)] + [b"old2-0", b"old2-1"]
        assert spool.corrupt == 1
        spool.commit(spool.read(2)[-1].position)
        spool.append(TOPIC, b"new")
    with Spool(tmp_path) as spool:
        assert _payloads(spool) == [
            *(b"old-%d" % i for i in range(2, 5)),
            b"old2-0",
            b"old2-1",
            b"new",
        ]
        assert spool.corrupt == 0


def test_previous_format_behind_a_cursor_replays_from_the_cursor(tmp_path):
    records = [_legacy_record(TOPIC, b"old-%d" % i) for i in range(4)]
    tmp_path.joinpath("0000000000000001.seg").write_bytes(b"".join(records))
    raw = struct.pack("<4sQQ", b"EAS1", 1, len(records[0]))
    tmp_path.joinpath("cursor").write_bytes(raw + zlib.crc32(raw).to_bytes(4, "little"))
    with Spool(tmp_path) as spool:
        assert _payloads(spool) == [b"old-1", b"old-2", b"old-3"]


def test_record_damaged_while_open_is_skipped_and_counted(tmp_path):
    with Spool(tmp_path) as spool:
        sent = _fill(spool, 10)
        offset = spool.read(3)[-2].position.offset  # record 3
        seg = _segments(tmp_path)[-1]
        with open(seg, "r+b") as fh:  # bit rot under a running daemon
            fh.seek(offset + 5)
            fh.write(b"\xff")  # its length field
        msgs = spool.read(20)
        assert [m.payload for m in msgs] == sent[:2] + sent[3:]
        assert (spool.corrupt, spool.dropped) == (1, 1)
        assert len(spool.read(20)) == 9 and spool.corrupt == 1  # counted once
        spool.commit(msgs[-1].position)
        assert spool.pending == 0 and spool.read(20) == []
