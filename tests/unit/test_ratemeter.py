"""The one rate meter (capture fps and pipeline fps): exact rates on a fake clock."""

from __future__ import annotations

import threading

import pytest

from edge_agent.ratemeter import RateMeter
from tests.support.clock import FakeClock


def test_rate_meter_window_and_age():
    clock = FakeClock()
    meter = RateMeter(window=2.0, clock=clock)
    assert meter.rate() == 0.0 and meter.age() is None
    for i in range(11):  # 10 fps from t=10.0 to t=11.0
        clock.now = 10.0 + i / 10
        meter.tick()
    assert meter.rate() == pytest.approx(10.0)
    clock.now = 11.5
    assert meter.age() == pytest.approx(0.5)
    clock.now = 20.0
    assert meter.rate() == 0.0  # nothing recent
    assert meter.age() == pytest.approx(9.0)  # the last frame is remembered past the window


def test_rate_of_a_steady_stream_before_the_window_fills():
    clock = FakeClock()
    meter = RateMeter(window=5.0, clock=clock)
    assert meter.rate() == 0.0
    for i in range(11):  # 10 fps for one second
        clock.now = i / 10
        meter.tick()
    assert meter.rate() == 10.0


def test_rate_over_a_full_sliding_window():
    clock = FakeClock()
    meter = RateMeter(window=5.0, clock=clock)
    for i in range(41):  # 4 fps for ten seconds
        clock.now = i * 0.25
        meter.tick()
    assert meter.rate() == 4.0


def test_rate_decays_when_the_stream_stalls():
    clock = FakeClock()
    meter = RateMeter(window=5.0, clock=clock)
    for i in range(11):
        clock.now = i / 10
        meter.tick()
    clock.now = 4.0
    assert meter.rate() == 10 / 4.0
    clock.now = 6.05  # every tick but the last is older than 5 s
    assert meter.rate() == 0.0


def test_rate_counts_batched_ticks_and_respects_memory_bound():
    clock = FakeClock()
    meter = RateMeter(window=100.0, clock=clock)
    for t, n in ((0.0, 1), (1.0, 3), (2.0, 3)):
        clock.now = t
        meter.tick(n)
    meter.tick(0)  # ignored
    assert meter.rate() == 3.0

    bounded = RateMeter(window=100.0, clock=clock, max_entries=4)
    for t in range(10):
        clock.now = float(t)
        bounded.tick()
    assert bounded.rate() == 1.0  # ticks 6..9 kept: 3 events in 3 s


@pytest.mark.parametrize(("window", "entries"), [(0.0, 10), (1.0, 1)])
def test_rate_meter_rejects_bad_bounds(window, entries):
    with pytest.raises(ValueError):
        RateMeter(window, max_entries=entries)


def test_concurrent_ticks_are_all_counted():
    clock = FakeClock()
    meter = RateMeter(window=100.0, clock=clock, max_entries=100_000)
    threads = [
        threading.Thread(target=lambda: [meter.tick() for _ in range(1000)]) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10.0)
    clock.now = 1.0
    assert meter.rate() == 4000 - 1  # every tick at t=0 but the first, over 1 s
