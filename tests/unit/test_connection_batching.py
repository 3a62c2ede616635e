"""A burst of publishes leaves corked, and paho's reads come from one ``recv`` per burst
without the publisher thread ever waiting on a socket while read bytes are buffered."""

from __future__ import annotations

import select
import socket
import sys
import time

import pytest

from edge_agent.publishing.packet_bound import RECV_CHUNK, ReadBuffer
from tests.unit.test_connection_bookkeeping import new_connection


class _Client:
    """paho's external-loop surface, over a given socket."""

    def __init__(self, sock):
        self.sock = sock
        self.reads = 0

    def socket(self):
        return self.sock

    def want_write(self) -> bool:
        return False

    def loop_read(self) -> int:
        self.reads += 1
        return 0

    def loop_write(self) -> int:
        return 0

    def loop_misc(self) -> int:
        return 0


class _Recv:
    """A socket's ``recv`` over scripted chunks; records the sizes asked for."""

    def __init__(self, *chunks: bytes | type[BaseException]):
        self.chunks = list(chunks)
        self.asked: list[int] = []

    def __call__(self, bufsize: int) -> bytes:
        self.asked.append(bufsize)
        chunk = self.chunks.pop(0)
        if isinstance(chunk, type):
            raise chunk()
        return chunk


def test_a_burst_of_pubacks_is_read_with_one_recv():
    burst = bytes.fromhex("40020001") * 3  # three MQTT 3.1.1 PUBACKs
    recv = _Recv(burst, BlockingIOError)
    buf = ReadBuffer(recv)
    got = []
    for _ in range(3):  # as paho reads a packet: command byte, length byte, body
        got += [buf.recv(1), buf.recv(1), buf.recv(2)]
    assert b"".join(got) == burst
    assert recv.asked == [RECV_CHUNK] and len(buf) == 0
    with pytest.raises(BlockingIOError):  # nothing buffered: the socket says "not now"
        buf.recv(1)
    assert recv.asked == [RECV_CHUNK, RECV_CHUNK]


def test_a_read_buffer_hands_over_no_more_than_asked_and_passes_end_of_stream_on():
    recv = _Recv(b"abcdef", b"")
    buf = ReadBuffer(recv)
    assert buf.recv(4) == b"abcd" and len(buf) == 2
    assert buf.recv(100) == b"ef" and len(buf) == 0
    assert buf.recv(1) == b""  # the broker closed the connection: paho sees it


def test_step_reads_buffered_bytes_without_waiting_on_the_socket():
    """Bytes read ahead for paho are not on the socket any more: waiting for the socket
    to become readable would leave them unread until the broker sent something else."""
    conn = new_connection()
    quiet, other = socket.socketpair()
    try:
        client = conn.client = _Client(quiet)
        conn.connected = True
        conn._reads = ReadBuffer(_Recv(bytes.fromhex("40020001")))
        conn._reads.recv(1)  # paho took the first byte; three wait in the buffer
        assert conn.step(30.0)
        assert client.reads == 1
        conn._reads = ReadBuffer(_Recv())  # empty: wait on the socket as before
        assert conn.step(0.0) and client.reads == 1
    finally:
        quiet.close()
        other.close()


@pytest.fixture
def tcp_pair():
    """A connected TCP pair on loopback with ``TCP_NODELAY``, as a broker link is."""
    listener = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(listener.getsockname())
    theirs, _ = listener.accept()
    listener.close()
    ours.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    theirs.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _drain(sock: socket.socket) -> None:
    """Read what a slow attempt sent (a corked block flushes as it ends)."""
    while select.select([sock], [], [], 1.0)[0] and sock.recv(4096):
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_CORK is Linux's")
def test_publishes_inside_a_corked_block_leave_together_at_its_end(tcp_pair):
    ours, theirs = tcp_pair
    conn = new_connection()
    conn.client = _Client(ours)
    for _ in range(5):  # the kernel sends corked data after 200 ms anyway: a stalled
        started = time.monotonic()  # runner may see it early; try again then
        with conn.corked(True):
            for n in range(3):
                ours.send(b"publish %d;" % n)
            held = not _readable(theirs)
        if time.monotonic() - started < 0.1:
            break
        _drain(theirs)  # that attempt's bytes must not be read as this one's
    assert held, "corked publishes reached the broker before the batch ended"
    assert select.select([theirs], [], [], 5.0)[0], "nothing sent when the batch ended"
    data = b""
    while len(data) < 30 and select.select([theirs], [], [], 5.0)[0]:
        data += theirs.recv(100)
    assert data == b"publish 0;publish 1;publish 2;"


def test_a_single_publish_is_not_corked(tcp_pair):
    ours, theirs = tcp_pair
    conn = new_connection()
    conn.client = _Client(ours)
    with conn.corked(False):
        ours.send(b"alone")
        assert select.select([theirs], [], [], 5.0)[0]  # on its way at once
    assert theirs.recv(100) == b"alone"


def test_a_socket_that_cannot_be_corked_publishes_as_before():
    """Websockets (paho's wrapper has no ``setsockopt``), a socket paho closed meanwhile,
    or none at all: the batch is sent without a cork and nothing raises."""

    class _Wrapper:
        pass

    conn = new_connection()
    for sock in (_Wrapper(), None):
        conn.client = _Client(sock)
        with conn.corked(True):
            pass
    closing = socket.socket()
    conn.client = _Client(closing)
    with conn.corked(True):
        closing.close()  # the connection failed inside the batch
