"""The latest-frame slot: newest wins, drops counted, held buffers never overwritten; quiet
frames wait in order without waking the consumer."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_agent.capture.frames import (
    BUFFERS,
    QUIET_MAX,
    Deferred,
    Frame,
    FrameSlot,
    FreezeWatch,
    same_image,
)
from edge_agent.errors import CaptureError


def _fill(slot: FrameSlot, frame_id: int) -> int:
    """Producer step: claim the free buffer, 'read' frame_id into it, publish; its index."""
    index, buffer = slot.writable()
    if buffer is None:
        buffer = np.empty((4, 4, 3), np.uint8)
    buffer[...] = frame_id
    slot.publish(index, Frame(buffer, frame_id, 0.0, 0.0, "cam"))
    return index


def test_empty_slot_times_out():
    assert FrameSlot().take(0) is None


def test_newest_wins_and_drops_are_counted():
    slot = FrameSlot()
    for frame_id in range(4):
        _fill(slot, frame_id)
    frame = slot.take(0)
    assert frame.frame_id == 3 and int(frame.image[0, 0, 0]) == 3
    assert slot.counts() == (4, 3, False, (4, 4))


def test_a_frame_is_never_returned_twice():
    slot = FrameSlot()
    _fill(slot, 0)
    assert slot.take(0).frame_id == 0
    assert slot.take(0) is None
    _fill(slot, 1)
    assert slot.take(0).frame_id == 1
    assert slot.take(0) is None


def test_held_frame_is_not_overwritten_while_producer_runs_ahead():
    slot = FrameSlot()
    _fill(slot, 0)
    held = slot.take(0)
    for frame_id in range(1, 50):  # the consumer is busy with frame 0 all along
        _fill(slot, frame_id)
        assert slot.writable()[1] is not held.image
        assert int(held.image[0, 0, 0]) == 0, f"held buffer overwritten by frame {frame_id}"
    latest = slot.take(0)
    assert latest.frame_id == 49
    assert latest.image is not held.image
    assert slot.counts() == (50, 48, False, (4, 4))


def test_buffers_are_reused_not_reallocated():
    slot = FrameSlot()
    seen = set()
    for frame_id in range(30):
        _fill(slot, frame_id)
        if frame_id % 3 == 0:
            seen.add(id(slot.take(0).image))
    index, buffer = slot.writable()
    assert buffer is not None
    assert len(seen) <= BUFFERS


def test_writable_never_hands_out_latest_or_held():
    slot = FrameSlot()
    _fill(slot, 0)
    held_frame = slot.take(0)
    _fill(slot, 1)  # now one latest, one held
    index, buffer = slot.writable()
    assert buffer is None or (buffer is not held_frame.image)
    latest = slot.take(0)
    assert buffer is None or buffer is not latest.image


def test_close_drains_then_returns_none_at_once():
    slot = FrameSlot()
    _fill(slot, 0)
    slot.close()
    assert slot.take(30).frame_id == 0
    assert slot.take(30) is None  # closed and empty: no wait (pytest-timeout guards it)


@pytest.mark.timeout(10)
def test_lossless_publish_waits_for_the_consumer():
    slot = FrameSlot()
    stop = threading.Event()
    published = []

    def producer():
        for frame_id in range(20):
            index, buffer = slot.writable()
            image = np.full((2, 2, 3), frame_id, np.uint8) if buffer is None else buffer
            image[...] = frame_id
            if not slot.publish(index, Frame(image, frame_id, 0.0, 0.0, "c"), wait=True, stop=stop):
                return
            published.append(frame_id)

    thread = threading.Thread(target=producer)
    thread.start()
    got = []
    while len(got) < 20:
        frame = slot.take(5)
        assert frame is not None
        assert int(frame.image[0, 0, 0]) == frame.frame_id
        got.append(frame.frame_id)
    thread.join(5)
    assert got == list(range(20))
    assert slot.counts() == (20, 0, False, (2, 2))


@pytest.mark.timeout(10)
def test_lossless_publish_gives_up_on_stop():
    slot = FrameSlot()
    _fill(slot, 0)  # never taken
    stop = threading.Event()
    stop.set()
    index, _ = slot.writable()
    frame = Frame(np.zeros((2, 2, 3), np.uint8), 1, 0.0, 0.0, "c")
    assert slot.publish(index, frame, wait=True, stop=stop, poll=0.01) is False
    assert slot.counts() == (1, 0, True, (4, 4))  # the frame never taken


def test_the_two_frames_in_flight_stay_intact_until_a_third_is_taken():
    """The pipeline keeps two frames in flight: the older one's image must survive the
    producer running ahead while the newer one is being processed."""
    slot = FrameSlot()
    _fill(slot, 1)
    first = slot.take(0)
    _fill(slot, 2)
    second = slot.take(0)
    for frame_id in range(3, 40):
        _fill(slot, frame_id)
        assert int(first.image[0, 0, 0]) == 1, f"first overwritten by frame {frame_id}"
        assert int(second.image[0, 0, 0]) == 2, f"second overwritten by frame {frame_id}"
    third = slot.take(0)  # releases the first one only
    for frame_id in range(40, 60):
        _fill(slot, frame_id)
        assert int(second.image[0, 0, 0]) == 2
        assert int(third.image[0, 0, 0]) == 39


def test_same_image_needs_every_pixel_and_the_shape():
    a = np.zeros((48, 64, 3), np.uint8)
    b = a.copy()
    assert same_image(a, b)
    b[3, 5, 1] = 1  # off the sparse grid: the whole images decide
    assert not same_image(a, b)
    assert not same_image(a, np.zeros((64, 48, 3), np.uint8))


def test_freeze_watch_fails_an_image_repeated_for_its_limit():
    watch = FreezeWatch(1.0)
    still, moved = np.zeros((8, 8, 3), np.uint8), np.ones((8, 8, 3), np.uint8)
    for now in (0.0, 0.5, 1.4):  # repeated since 0.5: within the limit
        watch.check(still.copy(), now)
    with pytest.raises(CaptureError, match="the same image for 1.0s"):
        watch.check(still.copy(), 1.5)
    with pytest.raises(CaptureError):  # still the same: fails again
        watch.check(still.copy(), 1.6)
    watch.check(moved, 1.7)  # a new image (or size) ends it
    watch.check(still, 1.8)


def test_freeze_watch_without_a_limit_watches_nothing():
    watch = FreezeWatch(None)
    for now in range(100):
        watch.check(np.zeros((8, 8, 3), np.uint8), float(now))


def _quiet(slot: FrameSlot, frame_id: int, at: float) -> None:
    """Producer step for a deferred frame found unchanged, read at monotonic ``at``."""
    index, _ = slot.writable()
    preview = np.zeros((60, 80), np.uint8)
    deferred = Deferred(np.zeros(8, np.uint8), 0, preview, (640, 480))
    slot.publish(index, Frame(None, frame_id, 0.0, at, "cam", deferred), quiet=True)


def _count_wakes(slot: FrameSlot) -> list[int]:
    woken, notify_all = [0], slot._cond.notify_all

    def counted() -> None:
        woken[0] += 1
        notify_all()

    slot._cond.notify_all = counted
    return woken


def _take_all(slot: FrameSlot) -> list[int]:
    ids = []
    while (frame := slot.take(0)) is not None:
        ids.append(frame.frame_id)
    return ids


def test_quiet_frames_wait_in_order_and_wake_the_consumer_once_the_oldest_waited():
    slot = FrameSlot()
    woken = _count_wakes(slot)
    for i in range(6):  # 30 fps: the sixth comes 0.167 s after the first
        _quiet(slot, i, i / 30)
    assert woken[0] == 0  # nobody was woken for them
    _quiet(slot, 6, 0.2)
    assert woken[0] == 1  # the oldest waited QUIET_S
    assert _take_all(slot) == list(range(7))  # every one, in order, none dropped
    assert slot.counts() == (7, 0, False, (640, 480))


def test_a_frame_after_quiet_ones_is_taken_after_them_and_a_quiet_one_never_overtakes():
    slot = FrameSlot()
    woken = _count_wakes(slot)
    _quiet(slot, 0, 0.0)
    _quiet(slot, 1, 0.03)
    _fill(slot, 2)  # it moved: the consumer is woken at once
    assert woken[0] == 1
    _quiet(slot, 3, 0.06)  # over an untaken latest frame: published as usual, not queued
    assert _take_all(slot) == [0, 1, 3]
    assert slot.counts().dropped == 1  # frame 2, replaced by the newer one as always


def test_at_most_quiet_max_frames_wait_and_the_oldest_are_dropped_beyond():
    slot = FrameSlot()
    for i in range(QUIET_MAX + 3):  # read together: none waited QUIET_S
        _quiet(slot, i, 0.0)
    assert _take_all(slot) == list(range(3, QUIET_MAX + 3))
    assert slot.counts().dropped == 3


def test_a_lossless_publish_is_never_quiet():
    slot = FrameSlot()
    woken = _count_wakes(slot)
    index, _ = slot.writable()
    deferred = Deferred(np.zeros(8, np.uint8), 0, np.zeros((60, 80), np.uint8), (640, 480))
    slot.publish(index, Frame(None, 0, 0.0, 0.0, "cam", deferred), wait=True, quiet=True)
    assert woken[0] == 1  # a file read losslessly hands every frame over at once
    assert _take_all(slot) == [0]


def test_a_frame_is_undecoded_only_while_its_camera_left_it_compressed():
    preview = np.zeros((60, 80), np.uint8)
    left = Frame.captured(Deferred(np.zeros(8, np.uint8), 0, preview, (640, 480)), 1, 0.0, "c")
    assert left.undecoded and left.size == (640, 480) and left.pixels is preview
    moved = Deferred(np.zeros(8, np.uint8), 0, preview, (640, 480), np.zeros((480, 640, 3)))
    for frame in (
        Frame.captured(moved, 2, 0.0, "c"),
        Frame.captured(np.zeros((4, 6, 3)), 3, 0.0, "c"),
    ):
        assert not frame.undecoded and frame.image is not None
