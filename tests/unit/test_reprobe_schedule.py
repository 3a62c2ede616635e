"""When the TPU is re-probed after it failed: a TPU that keeps failing right after each
return (a flapping USB link) is probed ever less often; one that ran well for longer than
it was waited for is probed again at the initial delay."""

from types import SimpleNamespace

import pytest

from edge_agent.inference import reprobe
from edge_agent.inference.reprobe import ReprobeSchedule
from tests.support.clock import FakeClock


def wait_for_claim(schedule: ReprobeSchedule, clock: FakeClock) -> float:
    """Move the clock on in 0.5 s steps until a re-probe is due; the time it took."""
    start = clock.now
    while not schedule.claim():
        clock.now += 0.5
        assert clock.now - start < 3600, "no re-probe within an hour"
    return clock.now - start


def fail_then_probe_back(schedule: ReprobeSchedule, clock: FakeClock, ran: float) -> float:
    """The TPU fails ``ran`` s after it was installed; the delay until it is re-probed,
    which finds it (it is adopted again)."""
    clock.now += ran
    schedule.fell_back()
    schedule.installed(degraded=True)  # the CPU worker replaces it
    delay = wait_for_claim(schedule, clock)
    assert schedule.finished(switched=True, degraded=False) is None
    schedule.installed(degraded=False)  # the TPU worker adopted
    return delay


def test_a_flapping_tpu_is_reprobed_with_a_growing_delay(monkeypatch):
    clock = FakeClock(1000.0)
    monkeypatch.setattr(reprobe, "time", SimpleNamespace(monotonic=clock))
    schedule = ReprobeSchedule(5.0, 60.0)
    schedule.installed(degraded=False)  # started on the TPU
    delays = [fail_then_probe_back(schedule, clock, ran=0.1) for _ in range(6)]
    assert delays == pytest.approx([5.0, 10.0, 20.0, 40.0, 60.0, 60.0])
    # It then runs well for an hour: its next failure is retried at the initial delay.
    assert fail_then_probe_back(schedule, clock, ran=3600.0) == pytest.approx(5.0)


def test_failed_reprobes_back_off_and_a_return_then_a_long_run_starts_over(monkeypatch):
    clock = FakeClock(1000.0)
    monkeypatch.setattr(reprobe, "time", SimpleNamespace(monotonic=clock))
    schedule = ReprobeSchedule(5.0, 60.0)
    schedule.installed(degraded=False)
    clock.now += 100.0
    schedule.fell_back()
    schedule.installed(degraded=True)
    assert wait_for_claim(schedule, clock) == 5.0
    assert schedule.finished(switched=False, degraded=True) == 10.0  # still gone
    assert wait_for_claim(schedule, clock) == 10.0
    assert schedule.finished(switched=True, degraded=False) is None
    schedule.installed(degraded=False)
    assert fail_then_probe_back(schedule, clock, ran=600.0) == 5.0
