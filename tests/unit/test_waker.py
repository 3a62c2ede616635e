"""Tier 1: the publisher thread's waker sends one byte per burst, and never loses one."""

from __future__ import annotations

import select
import threading

from edge_agent.publishing.waker import Waker


def readable(waker: Waker) -> bool:
    return bool(select.select([waker.socket], [], [], 0)[0])


def test_a_burst_costs_one_byte_and_a_wake_after_draining_is_seen():
    waker = Waker()
    for _ in range(1000):
        waker.wake()
    assert waker.socket.recv(4096) == b"\0"  # one byte for the whole burst
    waker.drain()
    assert not readable(waker)
    waker.wake()  # after a drain the next wake-up is sent again
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
