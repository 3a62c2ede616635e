"""Tier 1: the publisher thread's waker sends one byte per burst, none while results
stream, and never loses a wake-up."""

from __future__ import annotations

import select
import threading
from types import SimpleNamespace

import pytest

from edge_agent.publishing import waker as waker_module
from edge_agent.publishing.waker import HOT_GAP_S, LINGER_S, SOON_S, Waker
from tests.support.clock import FakeClock


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    clock = FakeClock(1000.0)
    monkeypatch.setattr(waker_module.time, "monotonic", clock)
    return clock


def readable(waker: Waker) -> bool:
    return bool(select.select([waker.socket], [], [], 0)[0])


def step(waker: Waker) -> bool:
    """What the publisher thread does around its select(); True when it was woken."""
    woken = readable(waker)
    waker.settle(woken)
    return woken


def held(clock: FakeClock) -> Waker:
    """A waker whose thread holds: two wake-ups 1 ms apart."""
    waker = Waker()
    for _ in range(2):
        clock.now += 0.001
        waker.wake()
        step(waker)
    return waker


def test_a_burst_costs_one_byte_and_a_wake_after_settling_is_seen(clock):
    waker = Waker()
    for _ in range(1000):
        waker.wake()
    assert waker.socket.recv(4096) == b"\0"  # one byte for the whole burst
    waker.settle(True)
    assert not readable(waker)
    waker.wake()  # after a settle the next wake-up is sent again
    assert readable(waker)


def test_wait_returns_when_woken_from_another_thread():
    waker = Waker()
    done = threading.Event()

    def sleeper():
        waker.wait(10.0)
        done.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    waker.wake()
    assert done.wait(5.0)
    thread.join(5.0)
    waker.wake()
    assert readable(waker)  # the flag was cleared by the wait: this one was sent


def test_results_far_apart_send_a_byte_each_and_never_hold(clock):
    waker = Waker()
    for _ in range(5):
        clock.now += HOT_GAP_S * 3  # 33 ms apart: a 30 fps camera
        waker.wake()
        assert step(waker)
        assert waker.timeout(1.0) == 1.0  # no hold: the thread sleeps its full tick


def test_a_stream_is_held_and_its_producers_send_no_byte(clock):
    waker = Waker()
    waker.wake()
    assert step(waker)
    clock.now += HOT_GAP_S / 4
    waker.wake()
    assert step(waker)  # the second byte in quick succession starts a hold
    assert waker.timeout(1.0) == pytest.approx(LINGER_S)
    bytes_sent = 0
    for _ in range(200):  # results every 2.5 ms for half a second
        clock.now += 0.0025
        waker.wake()
        bytes_sent += readable(waker)
        step(waker)  # the select() returned: its timeout ran out, or a PUBACK came
    assert bytes_sent == 0
    assert waker.timeout(1.0) <= LINGER_S  # still holding while results come


def test_a_hold_ends_when_results_stop_and_the_next_result_wakes_at_once(clock):
    waker = held(clock)
    assert waker.timeout(1.0) == pytest.approx(LINGER_S)
    clock.now += LINGER_S  # the hold's end, with no result during it
    assert not step(waker)
    assert waker.timeout(1.0) == 1.0
    waker.wake()
    assert readable(waker)  # not held any more: the byte is sent


def test_a_result_published_just_as_a_hold_ends_is_not_lost(clock):
    """The producer's wake() comes while the thread decides: either the thread sees it
    and holds again, or the producer's byte is sent."""
    waker = held(clock)
    clock.now += LINGER_S
    waker.wake()  # during the hold: no byte, but seen when the hold ends
    assert not readable(waker)
    step(waker)
    assert waker.timeout(1.0) == pytest.approx(LINGER_S)  # held again, it looks again


def test_an_offline_wait_ends_a_hold_and_returns_at_once_for_a_wake_during_it(clock):
    """The connector's wake (or stop()) during a hold sent no byte: the offline wait
    must not sleep through it."""
    waker = held(clock)
    waker.wake()  # e.g. the connector ended, while held
    done = threading.Event()
    thread = threading.Thread(target=lambda: (waker.wait(30.0), done.set()))
    thread.start()
    assert done.wait(5.0)
    thread.join(5.0)
    waker.wake()
    assert readable(waker)  # and the hold is over: wake-ups send bytes again


def test_an_offline_wait_after_a_quiet_hold_still_wakes_for_a_later_wake(clock):
    waker = held(clock)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (waker.wait(30.0), done.set()))
    thread.start()
    assert not done.wait(0.05)  # nothing to wake it yet
    waker.wake()
    assert done.wait(5.0)
    thread.join(5.0)


def test_a_result_that_can_wait_sends_a_byte_only_when_the_thread_would_look_too_late(clock):
    waker = Waker()
    assert waker.timeout(1.0) == 1.0  # idle: the thread sleeps a second
    waker.wake_soon()
    assert readable(waker)  # too late for it: woken at once
    step(waker)
    assert waker.timeout(1.0) == pytest.approx(SOON_S)  # and it looks again soon
    clock.now += 0.05
    waker.wake_soon()
    assert not readable(waker)  # the thread looks within SOON_S anyway


def test_a_look_soon_window_is_kept_through_other_wake_ups_and_ends(clock):
    """A PUBACK wakes the thread mid-window: its next wait must not push the look past
    the window's end, or the next result would need a byte again."""
    waker = Waker()
    waker.timeout(1.0)
    waker.wake_soon()
    step(waker)
    assert waker.timeout(1.0) == pytest.approx(SOON_S)  # the window opens
    clock.now += 0.05  # a PUBACK wakes it
    assert waker.timeout(1.0) == pytest.approx(SOON_S - 0.05)
    waker.wake_soon()  # during the window: no byte
    assert not readable(waker)
    clock.now += SOON_S  # the window's end: it looks, and a result came in it
    assert waker.timeout(1.0) == pytest.approx(SOON_S)  # a new window for it
    clock.now += SOON_S  # nothing came in that one
    assert waker.timeout(1.0) == 1.0  # back to sleeping long


def test_a_result_that_can_wait_is_seen_when_it_read_a_stale_wake_time(clock):
    """The producer reads the thread's wake time just before the thread stores its next
    one (a long sleep): its flag, set first, makes that sleep short."""
    waker = Waker()
    waker.timeout(0.01)  # the thread's last wait ended soon: a stale, early wake time
    clock.now += 0.5
    waker.wake_soon()  # reads the stale time: no byte
    assert not readable(waker)
    assert waker.timeout(1.0) == pytest.approx(SOON_S)  # the thread looks soon all the same


class RacingWaker(Waker):
    """A producer's wake_soon() runs just before the thread stores its next wake time,
    so it reads the old one (while ``race`` is set)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "_wakes_by" and self.__dict__.pop("race", False):
            self.wake_soon()
        super().__setattr__(name, value)


def test_a_result_that_can_wait_is_seen_when_it_comes_as_the_thread_plans_its_wait(clock):
    """The thread stores its wake time before it reads the flag: read the other way
    round, the flag is still clear, the producer reads the old (early) time and sends no
    byte, and the thread sleeps the long wait."""
    waker = RacingWaker()
    waker.timeout(0.01)  # a stale, early wake time
    clock.now += 0.5
    waker.race = True
    assert waker.timeout(1.0) == pytest.approx(SOON_S)
    assert not readable(waker)  # the producer read the stale time: no byte


def test_offline_a_result_that_can_wait_wakes_the_thread_at_once(clock):
    waker = Waker()
    waker.timeout(0.01)  # was online, its last wait short
    waker.wait(0.0)  # offline now
    waker.wake_soon()
    assert readable(waker)  # offline, results are spooled at once: it sends its byte


def test_an_offline_wait_returns_at_once_for_a_result_that_sent_no_byte(clock, monkeypatch):
    """Just after a disconnect: a producer read the connected thread's early wake time."""
    waker = Waker()
    waker.timeout(0.01)
    waker.wake_soon()
    assert not readable(waker)  # no byte: the thread was to look within SOON_S

    def slept(*args):
        raise AssertionError(f"the offline wait slept {args[-1]} s")

    monkeypatch.setattr(waker_module, "select", SimpleNamespace(select=slept))
    waker.wait(30.0)  # it looks now, not after SOON_S or the offline wait
