"""The worker's wire: packed Run/Done frames, pickled control messages, and the reader
that takes whatever is waiting in one read()."""

from __future__ import annotations

import multiprocessing as mp
import os
import struct

import pytest

from edge_agent.inference.protocol import (
    AttachBuffers,
    Done,
    FrameReader,
    InvokeFailed,
    Run,
    Stop,
    decode,
    encode,
)


@pytest.mark.parametrize(
    "msg",
    [
        Run(0, 0),
        Run(2**62, 1),
        Done(7, 1, 2.53125),
        Done(-1, 0, float("inf")),
        InvokeFailed(3, 0, "invoke failed: unresolved custom op"),
        AttachBuffers(("psm_in0", "psm_in1"), ("psm_out0", "psm_out1")),
        Stop(),
    ],
)
def test_every_message_comes_back_as_the_same_typed_message(msg):
    back = decode(encode(msg))
    assert back == msg
    assert type(back) is type(msg)


def test_the_per_frame_messages_are_packed_not_pickled():
    assert len(encode(Run(5, 1))) == 17
    assert len(encode(Done(5, 1, 2.5))) == 25
    # a pickle starts with its protocol marker, which no packed tag equals
    assert encode(Stop())[0] == 0x80
    assert encode(InvokeFailed(1, 0, "x"))[0] == 0x80


def _frame(body: bytes) -> bytes:
    """A frame as Connection.send_bytes writes it."""
    return struct.pack("!i", len(body)) + body


@pytest.fixture
def pipe():
    """(reading Connection, writing fd)."""
    r, w = mp.Pipe(duplex=False)
    yield r, w.fileno()
    r.close()
    w.close()


def test_a_frame_read_a_byte_at_a_time_comes_out_whole_and_once(pipe):
    r, w = pipe
    reader = FrameReader(r, chunk=1)  # every read() returns one byte
    os.write(w, _frame(encode(Done(9, 1, 2.5))) + _frame(encode(Run(10, 0))))
    assert reader.recv() == Done(9, 1, 2.5)
    assert reader.recv() == Run(10, 0)
    assert not reader.poll(0)


def test_several_frames_read_at_once_are_handed_out_in_order(pipe):
    r, w = pipe
    reader = FrameReader(r)
    msgs = [Run(1, 0), AttachBuffers(("a",), ("b",)), Run(2, 1), Stop()]
    os.write(w, b"".join(_frame(encode(m)) for m in msgs))
    got = []
    while reader.poll(0):  # the buffered frames count as waiting, with nothing left to read
        got.append(reader.recv())
    assert got == msgs


def test_the_long_header_of_a_frame_over_2_gib_is_understood(pipe):
    r, w = pipe
    body = encode(Run(4, 1))
    os.write(w, struct.pack("!i", -1) + struct.pack("!Q", len(body)) + body)
    assert FrameReader(r).recv() == Run(4, 1)


def test_the_other_end_closing_is_eof_even_mid_frame():
    r, w = mp.Pipe(duplex=False)
    reader = FrameReader(r)
    os.write(w.fileno(), _frame(encode(Run(1, 0)))[:6])
    w.close()
    assert reader.poll(5)  # the close is something to receive: it must not hang a poller
    with pytest.raises(EOFError):
        reader.recv()
    r.close()


def test_a_closed_connection_is_refused_not_read_by_its_old_number():
    r, w = mp.Pipe(duplex=False)
    reader = FrameReader(r)
    r.close()
    with pytest.raises(OSError):
        reader.poll(0)
    with pytest.raises(OSError):
        reader.recv()
    w.close()


def test_it_reads_what_a_real_connection_sends_both_ways():
    """The parent keeps multiprocessing's Connection: its pickled and packed frames mix."""
    parent, child = mp.Pipe(duplex=True)
    try:
        parent.send(AttachBuffers(("in",), ("out",)))
        parent.send_bytes(encode(Run(11, 1)))
        parent.send(Stop())
        reader = FrameReader(child)
        assert reader.recv() == AttachBuffers(("in",), ("out",))
        assert reader.recv() == Run(11, 1)
        assert reader.recv() == Stop()
        child.send_bytes(encode(Done(11, 1, 2.5)))
        child.send(InvokeFailed(12, 0, "boom"))
        back = FrameReader(parent)
        assert back.recv() == Done(11, 1, 2.5)
        assert back.recv() == InvokeFailed(12, 0, "boom")
    finally:
        parent.close()
        child.close()


def test_a_frame_begun_but_not_finished_is_not_ready_so_recv_never_blocks(pipe):
    """A worker stopped mid-frame (SIGSTOP, not dead): the parent's receive(timeout) polls
    and then reads; had poll said True for part of a frame, recv would block for ever and
    the supervisor's hang deadline would never fire."""
    r, w = pipe
    reader = FrameReader(r)
    frame = _frame(encode(Done(3, 1, 2.5)))
    os.write(w, frame[:7])
    assert not reader.poll(0.05)  # half a frame is nothing to receive yet
    os.write(w, frame[7:])
    assert reader.poll(5)
    assert reader.recv() == Done(3, 1, 2.5)
    assert not reader.poll(0)
