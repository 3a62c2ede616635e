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

A deferred frame (see :class:`Deferred`) brings its own arrays, which no read reuses:
its buffer is left empty.

Quiet frames. A deferred frame its camera found unchanged since the previous one (left
undecoded: most likely a still frame, which only repeats earlier results) may be
published ``quiet``: it is queued behind the quiet frames not taken yet, without waking
the consumer, who takes them in order at its next look, or once the oldest has waited
:data:`QUIET_S`. A still scene at 30 fps then wakes the pipeline about five times a
second instead of 30. At most :data:`QUIET_MAX` wait; the oldest is dropped (counted)
beyond. A frame published over an untaken latest frame is never quiet (it would overtake
it), nor is one published losslessly.

One producer and one consumer per slot.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import NamedTuple

import numpy as np

from edge_agent.errors import CaptureError

HELD = 2  # frames the consumer may hold at once (two in flight)
BUFFERS = HELD + 2  # + the latest + the one the producer reads into
SAMPLE_STRIDE = 8  # same_image compares every 8th row and column before whole images
# Seconds one image may repeat on a network stream before it counts as frozen: far above
# stale_after, as an encoder may repeat a still scene's picture exactly until its next
# keyframe (a few seconds; "smart" codecs stretch it on static scenes).
FREEZE_AFTER = 30.0
QUIET_S = 0.2  # the longest a quiet frame waits before its consumer is woken
QUIET_MAX = 16  # quiet frames waiting at most (half a second at 30 fps)


class Deferred(NamedTuple):
    """A compressed frame whose decode may wait until it is needed.

    A motion-gated MJPG camera decodes a small preview of each frame, and the frame
    itself only when it differs from the previous one (a guess at the gate's verdict);
    the consumer decodes the others (``capture.mjpeg.develop``) only when the model is
    to see them, so a still scene costs no full decodes.
    """

    packet: np.ndarray  # the JPEG as the source gave it, owned by the frame
    flag: int  # the cv2.imdecode flags that decode it at the camera's scale
    preview: np.ndarray  # a 1/8-scale greyscale decode (uint8, 2-D), for the motion gate
    size: tuple[int, int]  # (width, height) of the full decode
    image: np.ndarray | None = None  # the full decode, when the camera made it


class Frame(NamedTuple):
    """One captured image.

    Attributes:
        image: BGR uint8 (H, W, 3); None while ``deferred``. Owned by the camera: valid
            until the second successful ``get()`` after it on the same camera; copy it
            to keep it longer.
        frame_id: per-camera counter, +1 per frame read (gaps are dropped frames).
        timestamp: ``time.time()`` when the frame was read.
        monotonic: ``time.monotonic()`` when the frame was read (for ages and latency).
        camera: the camera's name.
        deferred: the compressed frame and its preview, from a camera that may leave the
            decode to its consumer (``image`` is None until decoded).
    """

    image: np.ndarray | None
    frame_id: int
    timestamp: float
    monotonic: float
    camera: str
    deferred: Deferred | None = None

    @classmethod
    def captured(
        cls, read: np.ndarray | Deferred, frame_id: int, monotonic: float, camera: str
    ) -> Frame:
        """A frame read just now: ``read`` is a capture's image or deferred frame."""
        if isinstance(read, Deferred):
            return cls(read.image, frame_id, time.time(), monotonic, camera, read)
        return cls(read, frame_id, time.time(), monotonic, camera)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image, decoded or not."""
        if self.image is None:
            return self.deferred.size  # type: ignore[union-attr]
        return self.image.shape[1], self.image.shape[0]

    @property
    def undecoded(self) -> bool:
        """Left compressed by its camera (a still frame: decoded only if the model is to
        see it). Such frames are *quiet*: they wait in the slot in batches (FrameSlot)."""
        return self.image is None

    @property
    def pixels(self) -> np.ndarray:
        """The pixels every frame of its camera has: a deferred frame's preview, or the
        image (the motion gate and the freeze watch compare like with like)."""
        return self.deferred.preview if self.deferred is not None else self.image  # type: ignore[return-value]


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
        self._quiet: deque[Frame] = deque()  # quiet frames not taken yet, oldest first
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
        quiet: bool = False,
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
            quiet: a deferred frame unchanged since the previous one: queued without
                waking the consumer (see the module docstring).

        Returns:
            False when the wait was ended by ``stop`` or :meth:`close` (nothing published).
        """
        with self._cond:
            while wait and self._latest is not None:
                if self._closed or (stop is not None and stop.is_set()):
                    return False
                self._cond.wait(poll)
            if quiet and not wait and self._latest is None:
                self._queue_quiet(frame)
                return True
            if self._latest is not None:
                self._dropped += 1
            self._buffers[index] = frame.image  # None for a deferred frame: none to reuse
            self._frames[index] = frame
            self._latest = index
            self._published += 1
            self._size = frame.size
            self._cond.notify_all()
            return True

    def _queue_quiet(self, frame: Frame) -> None:
        """Queue a quiet frame (the lock held); wake the consumer once the oldest waited
        QUIET_S."""
        if len(self._quiet) >= QUIET_MAX:
            self._quiet.popleft()
            self._dropped += 1
        self._quiet.append(frame)
        self._published += 1
        self._size = frame.size
        if frame.monotonic - self._quiet[0].monotonic >= QUIET_S:
            self._cond.notify_all()

    def take(self, timeout: float) -> Frame | None:
        """The newest frame not taken yet, waiting up to ``timeout`` seconds for one;
        first, in order, the quiet frames queued before it.

        Taking a frame releases the one taken two takes before it to the producer (quiet
        frames have no buffer and do not count).

        Args:
            timeout: seconds; 0 polls.

        Returns:
            The frame, or None on timeout or when the slot is closed and empty.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._latest is None and not self._quiet:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._quiet:  # older than the latest frame; no buffer to hold
                return self._quiet.popleft()
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
            pending = self._latest is not None or bool(self._quiet)
            return SlotCounts(self._published, self._dropped, pending, self._size)


class FreezeWatch:
    """Spots a live stream that keeps returning one image, and fails it after ``limit`` s.

    OpenCV's FFmpeg backend keeps converting to the size a stream had when it was opened:
    once the stream changes resolution (its settings changed, a camera switching
    profiles), every read returns the last image converted at the old size again, as a
    success, at the stream's rate. A live camera never repeats an image exactly for long
    (sensor noise, a lossy encoder's keyframes), so an image repeated for ``limit``
    seconds means a frozen stream: the camera reopens it, at its new size.

    Args:
        limit: seconds an image may repeat; None watches nothing (files, devices and
            synthetic sources may repeat images).
    """

    def __init__(self, limit: float | None):
        self._limit = limit
        self._last: np.ndarray | None = None  # the last image published (intact, see above)
        self._since: float | None = None  # when the repeated image first came again

    def check(self, image: np.ndarray, now: float) -> None:
        """Take the image about to be published, read at ``now`` (monotonic seconds).

        Raises:
            CaptureError: the same image has come for ``limit`` seconds (it is then not
                to be published). Use one watch per opened stream: a stream reopened
                may well start with the image it showed last.
        """
        if self._limit is None:
            return
        if self._last is None or not same_image(self._last, image):
            self._last, self._since = image, None
            return
        self._since = now if self._since is None else self._since
        if now - self._since >= self._limit:
            raise CaptureError(
                f"the same image for {now - self._since:.1f}s: the stream froze "
                "(it may have changed resolution)"
            )
        self._last = image  # the same pixels, in the buffer about to be published


def same_image(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two images are identical (compared on a sparse grid first: live frames
    nearly always differ there, so the whole images are compared only when frozen)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    grid = (slice(None, None, SAMPLE_STRIDE), slice(None, None, SAMPLE_STRIDE))
    return bool(np.array_equal(a[grid], b[grid]) and np.array_equal(a, b))
