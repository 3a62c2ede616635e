"""The typed messages between the supervisor and its inference worker process.

Protocol (parent -> child / child -> parent), one NamedTuple per message:
    child:  Trying(backend)* then Ready(info) | LoadFailed(reason)
    parent: AttachBuffers(inputs, outputs)
    parent: Run(seq, slot)
    child:  Done(seq, slot, invoke_ms) | InvokeFailed(seq, slot, message)
    parent: Stop()

On the wire every message is one frame as :class:`multiprocessing.connection.Connection`
frames it (a 4-byte length, then the body). The two sent for every frame, Run and Done,
are packed structs tagged by their first byte; the rest are pickled (a pickle's first
byte is 0x80, never a tag). Both ends read their frames with :class:`FrameReader`.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import time
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, NamedTuple, Protocol, Union

from edge_agent.inference.tensors import TensorSpec


class WorkerInfo(NamedTuple):
    """What a started worker reports."""

    pid: int
    backend: str
    rank: int  # position of the backend in priority order: lower is better
    has_fallback: bool  # a worse backend remains if this one fails
    model_path: str
    runtime: str
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    attempts: tuple[tuple[str, str], ...]
    load_ms: float
    # Better backends that were unavailable here (no device, no library), not unfit for
    # the model: a re-probe may find them later (an accelerator plugged in after start).
    absent: tuple[str, ...] = ()


class Cancel(Protocol):
    """What gives a worker's load up once set: a ``threading.Event``, or the daemon's
    signal queue (set by SIGTERM while the first model loads)."""

    def is_set(self) -> bool:
        """True once the load is to be given up."""
        ...


class Trying(NamedTuple):
    """Child -> parent: about to load the model on this backend (if the process dies
    now, that backend killed it)."""

    backend: str


class Ready(NamedTuple):
    """Child -> parent: the model is loaded."""

    info: WorkerInfo


class LoadFailed(NamedTuple):
    """Child -> parent: no backend could load the model."""

    reason: str


class AttachBuffers(NamedTuple):
    """Parent -> child: the shared-memory block names of the input and output slots."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class Run(NamedTuple):
    """Parent -> child: invoke once on an input slot."""

    seq: int
    slot: int


class Done(NamedTuple):
    """Child -> parent: the outputs of ``seq`` are in output slot ``slot``."""

    seq: int
    slot: int
    invoke_ms: float


class InvokeFailed(NamedTuple):
    """Child -> parent: the invoke of ``seq`` raised."""

    seq: int
    slot: int
    message: str


class Stop(NamedTuple):
    """Parent -> child: exit."""


Completed = Union[Done, InvokeFailed]  # typing.Union: "|" on classes needs 3.10


_RUN = struct.Struct("<Bqq")  # tag, seq, slot
_DONE = struct.Struct("<Bqqd")  # tag, seq, slot, invoke_ms
_RUN_TAG, _DONE_TAG = 1, 2
_HEADER = struct.Struct("!i")  # Connection's frame header; -1: an 8-byte length follows
_LONG_HEADER = struct.Struct("!Q")


def encode(msg: Any) -> bytes:
    """The body of one frame: Run and Done packed (no pickling per frame), the rest pickled."""
    if type(msg) is Run:
        return _RUN.pack(_RUN_TAG, msg.seq, msg.slot)
    if type(msg) is Done:
        return _DONE.pack(_DONE_TAG, msg.seq, msg.slot, msg.invoke_ms)
    return bytes(ForkingPickler.dumps(msg))


def decode(body: bytes | bytearray) -> Any:
    """The message in one frame's body (see :func:`encode`)."""
    tag = body[0]
    if tag == _RUN_TAG:
        return Run(*_RUN.unpack(body)[1:])
    if tag == _DONE_TAG:
        return Done(*_DONE.unpack(body)[1:])
    return pickle.loads(body)


class FrameReader:
    """Reads the frames a Connection writes, with one ``read()`` for whatever is waiting.

    ``Connection.recv`` reads a frame's header and its body apart: two system calls a
    message, on the worker's path between two invokes. Once a reader is made, it must be
    the only reader of its connection.
    """

    def __init__(self, conn: Connection, chunk: int = 65536):
        self._conn = conn
        self._chunk = chunk
        self._buf = bytearray()
        self._eof = False  # the other end closed: what is buffered is all there is
        self._poller = select.poll()
        self._poller.register(conn.fileno(), select.POLLIN)

    def poll(self, timeout: float) -> bool:
        """True when a whole message is buffered or the other end closed, reading what
        arrives for up to ``timeout`` seconds: part of a frame is False, so that
        :meth:`recv` after True never blocks (a writer stopped mid-frame hangs no one).

        Raises:
            OSError: the connection is closed or the read failed.
        """
        self._conn.fileno()  # raises once closed, before its number can be someone else's
        deadline = time.monotonic() + max(0.0, timeout)
        while self._whole() is None and not self._eof:
            wait = max(0.0, deadline - time.monotonic())
            if not self._poller.poll(wait * 1000.0):
                return False
            self._fill()
        return True

    def recv(self) -> Any:
        """The next message, blocking until it is whole.

        Raises:
            EOFError: the other end closed.
            OSError: the connection is closed or the read failed.
        """
        while True:
            whole = self._whole()
            if whole is not None:
                body = bytes(self._buf[whole[0] : whole[1]])
                del self._buf[: whole[1]]
                return decode(body)
            if self._eof:
                raise EOFError("the other end closed the connection")
            self._fill()

    def _fill(self) -> None:
        """One read() of whatever is waiting (blocking when nothing is)."""
        data = os.read(self._conn.fileno(), self._chunk)
        self._eof = not data
        self._buf += data

    def _whole(self) -> tuple[int, int] | None:
        """(start, end) of the first frame's body when it is all buffered."""
        buf = self._buf
        if len(buf) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buf)
        start = _HEADER.size
        if size == -1:
            if len(buf) < _HEADER.size + _LONG_HEADER.size:
                return None
            (size,) = _LONG_HEADER.unpack_from(buf, _HEADER.size)
            start += _LONG_HEADER.size
        return (start, start + size) if len(buf) >= start + size else None
