"""The frame a worker keeps dying on, and when a dead worker is replaced."""

from edge_agent.inference.crash_loop import MAX_DEATHS, CrashLoop
from tests.support.clock import FakeClock


def test_the_same_oldest_frame_at_two_deaths_is_dropped():
    clock = FakeClock(1000.0)
    loop = CrashLoop(60.0, clock)
    assert MAX_DEATHS == 2
    assert not loop.died(7)
    assert loop.died(7)


def test_another_oldest_frame_starts_the_count_again():
    clock = FakeClock(1000.0)
    loop = CrashLoop(60.0, clock)
    assert not loop.died(7)
    assert not loop.died(8)  # 7 came back: it was not the culprit
    assert not loop.died(None)  # no frame in flight: nothing to blame
    assert not loop.died(8)
    assert loop.died(8)


def test_a_death_restarts_at_once_and_resets_the_load_backoff():
    clock = FakeClock(1000.0)
    loop = CrashLoop(8.0, clock)
    assert [loop.load_failed() for _ in range(3)] == [1.0, 2.0, 4.0]
    clock.now += 0.5
    loop.died(1)
    assert loop.restart_at == clock.now
    assert loop.load_failed() == 1.0


def test_a_worker_that_cannot_load_backs_off_and_a_rollback_does_not_wait():
    clock = FakeClock(1000.0)
    loop = CrashLoop(4.0, clock)
    assert [loop.load_failed() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert loop.restart_at == clock.now + 4.0
    loop.reset()
    assert loop.restart_at == clock.now
    assert loop.load_failed() == 1.0
