"""Frames and the latest-frame slot between a camera thread and its consumer.

Buffer ownership. The slot owns four image buffers. At any moment one may be *latest*
(published, not yet taken), two may be *held* (the last two frames the consumer took:
the pipeline keeps two frames in flight, and a frame's image must still be intact when
its results come back, e.g. for a snapshot), and the producer reads the next frame into
a fourth, *free* one. Since latest and held never share a buffer, a free buffer always
exists, so:

* the producer never waits for the consumer (unless asked to, see ``publish(wait=)``)
  and never allocates once the four buffers exist (``cap.read(buf)`` decodes in place);
* publishing over an untaken latest frame drops that frame (counted) and frees its
  buffer: memory stays bounded at four frames whatever the consumer does;
* a frame the consumer holds is never written while it is held. It stays valid until
  the consumer's second successful :meth:`FrameSlot.take` after it; copy the image to
  keep it longer.

One producer and one consumer per slot.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

import numpy as np

HELD = 2  # frames the consumer may hold at once (two in flight)
BUFFERS = HELD + 2  # + the latest + the one the producer reads into


class Frame(NamedTuple):
    """One captured image.

    Attributes:
        image: BGR uint8 (H, W, 3). Owned by the camera: valid until the second successful
            ``get()`` after it on the same camera; copy it to keep it longer.
        frame_id: per-camera counter, +1 per frame read (gaps are dropped frames).
        timestamp: ``time.time()`` when the frame was read.
        monotonic: ``time.monotonic()`` when the frame was read (for ages and latency).
        camera: the camera's name.
    """

    image: np.ndarray
    frame_id: int
    timestamp: float
    monotonic: float
    camera: str


class SlotCounts(NamedTuple):
    """Consistent snapshot of a slot's counters."""

    published: int
    dropped: int
    pending: bool
    size: tuple[int, int] | None = None  # (width, height) of the last frame published


class FrameSlot:
    """The single newest-frame slot over a ring of four reusable buffers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._buffers: list[np.ndarray | None] = [None] * BUFFERS
        self._frames: list[Frame | None] = [None] * BUFFERS
        self._latest: int | None = None
        self._held: list[int] = []  # oldest first, at most HELD
        self._closed = False
        self._published = 0
        self._size: tuple[int, int] | None = None
        self._dropped = 0

    def writable(self) -> tuple[int, np.ndarray | None]:
        """Claim the free buffer for the producer's next read.

        Returns:
            ``(index, buffer)``; buffer is None until the first frame written there.
        """
        with self._cond:
            for index in range(BUFFERS):
                if index != self._latest and index not in self._held:
                    return index, self._buffers[index]
        raise AssertionError("unreachable: latest and held cannot cover every buffer")

    def publish(
        self,
        index: int,
        frame: Frame,
        *,
        wait: bool = False,
        stop: threading.Event | None = None,
        poll: float = 0.1,
    ) -> bool:
        """Make ``frame`` (read into buffer ``index``) the latest one.

        Args:
            index: the buffer :meth:`writable` returned.
            frame: the frame; its image becomes that buffer (it may be a new array when
                the source changed size).
            wait: instead of dropping an untaken latest frame, wait until it is taken
                (lossless mode for files read as fast as they are consumed).
            stop: ends the wait early when set.
            poll: how often the wait looks at ``stop``.

        Returns:
            False when the wait was ended by ``stop`` or :meth:`close` (nothing published).
        """
        with self._cond:
            while wait and self._latest is not None:
                if self._closed or (stop is not None and stop.is_set()):
                    return False
                self._cond.wait(poll)
            if self._latest is not None:
                self._dropped += 1
            self._buffers[index] = frame.image
            self._frames[index] = frame
            self._latest = index
            self._published += 1
            self._size = (frame.image.shape[1], frame.image.shape[0])
            self._cond.notify_all()
            return True

    def take(self, timeout: float) -> Frame | None:
        """The newest frame not taken yet, waiting up to ``timeout`` seconds for one.

        Taking a frame releases the one taken two takes before it to the producer.

        Args:
            timeout: seconds; 0 polls.

        Returns:
            The frame, or None on timeout or when the slot is closed and empty.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._latest is None:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            index = self._latest
            self._latest = None
            self._held.append(index)
            del self._held[:-HELD]
            self._cond.notify_all()  # a waiting lossless producer may publish now
            return self._frames[index]

    def close(self) -> None:
        """No more frames will come: wake waiters; take() then drains and returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def counts(self) -> SlotCounts:
        """Published and dropped totals, whether a frame is waiting to be taken, and the
        last frame's size."""
        with self._cond:
            pending = self._latest is not None
            return SlotCounts(self._published, self._dropped, pending, self._size)
