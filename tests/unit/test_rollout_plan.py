"""The pure rollout logic: waves, thresholds, membership, timeouts, resume transitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import ModelUpdateError
from edge_agent.tools.release.rollout import runner as runner_module
from edge_agent.tools.release.rollout import steps
from edge_agent.tools.release.rollout.plan import (
    Amount,
    Member,
    OfflinePolicy,
    Plan,
    member_from_status,
    membership,
    should_halt,
    split_waves,
    wave_sizes,
)
from edge_agent.tools.release.rollout.store import (
    DeviceRecord,
    DeviceStep,
    Rollout,
    RolloutStatus,
    RolloutStore,
)


def _waves(text: str) -> tuple[Amount, ...]:
    return Plan.parse(text, "0").waves


@pytest.mark.parametrize(
    ("plan", "members", "sizes"),
    [
        ("1,5%,25%,100%", 200, [1, 9, 40, 150]),
        ("1,5%,25%,100%", 20, [1, 4, 15]),  # 5% of 20 is exactly 1: no empty wave
        ("1,5%,25%,100%", 3, [1, 2]),  # ceil(25% of 3) = 1: merged away
        ("1,5%,25%,100%", 1, [1]),
        ("10%,50%", 10, [1, 4, 5]),  # a plan short of 100% still reaches everyone
        ("5,2,100%", 10, [5, 5]),  # cumulative targets never go backwards
        ("50", 10, [10]),
    ],
)
def test_wave_sizes_are_cumulative_rounded_up_and_cover_everyone(plan, members, sizes):
    assert wave_sizes(_waves(plan), members) == sizes


@given(
    st.lists(st.one_of(st.integers(0, 300).map(str), st.integers(0, 100).map(lambda v: f"{v}%")),
             min_size=1, max_size=6),
    st.integers(1, 500),
)  # fmt: skip
def test_waves_partition_the_membership_in_order(plan, members):
    devices = [f"d{i:03d}" for i in range(members)]
    waves = split_waves(_waves(",".join(plan)), devices)
    assert [d for w in waves for d in w] == devices
    assert all(waves)


@pytest.mark.parametrize("bad", ["", "x", "-1", "101%", "1.5", "nan"])
def test_bad_amounts_are_refused(bad):
    with pytest.raises(ValueError):
        Plan.parse(bad or ",", "0")


def test_bad_times_are_refused():
    with pytest.raises(ValueError, match="device_timeout"):
        Plan.parse("100%", "0", device_timeout=0)
    with pytest.raises(ValueError, match="soak"):
        Plan.parse("100%", "0", soak=-1)


@pytest.mark.parametrize(
    ("threshold", "failures", "size", "halt"),
    [
        ("0", 0, 10, False),
        ("0", 1, 10, True),
        ("2", 2, 10, False),
        ("2", 3, 10, True),
        ("5%", 1, 1, True),  # a failed canary always halts a percentage plan
        ("5%", 1, 20, False),  # exactly 5 %: not above it
        ("5%", 2, 20, True),
        ("10%", 15, 150, False),
        ("10%", 16, 150, True),
    ],
)
def test_threshold_halts_only_above_it(threshold, failures, size, halt):
    assert should_halt(Amount.parse(threshold), failures, size) is halt


def test_membership_reads_groups_availability_and_type():
    statuses = {
        "a": ({"groups": ["lobby"], "state": "running"}, "online"),
        "b": ({"groups": ["lobby"], "state": "running"}, "offline"),  # last will fired
        "c": ({"groups": ["yard"], "state": "running"}, "online"),
        "d": ({"groups": ["lobby"], "device_type": "x86"}, "online"),
        "e": ({"groups": ["lobby"], "device_type": "rpi4", "state": "running"}, None),
        "bad/id": ({"groups": ["lobby"]}, "online"),
    }
    members = [m for d, (doc, av) in statuses.items()
               if (m := member_from_status(d, doc, "lobby", av))]  # fmt: skip
    split = membership(members, compatible=("rpi4",))
    assert split.targets == ("a", "e")
    assert split.offline == ("b",)
    assert split.incompatible == ("d",)
    assert membership([Member("z", True, None)], ("rpi4",)).targets == ("z",)


def _rollout(waves: list[list[str]], threshold: str = "0", timeout: float = 60) -> Rollout:
    plan = Plan.parse("1,100%", threshold, device_timeout=timeout)
    return Rollout(
        id="r1", release="/rel", label="m@2", prefix="ea", group="g", plan=plan,
        request_id="ro-r1", payload="{}", created=0.0, waves=waves,
        devices={d: DeviceRecord(wave=i) for i, w in enumerate(waves) for d in w},
    )  # fmt: skip


def _send(ro: Rollout, now: float) -> None:
    for d in steps.to_send(ro, set()):
        ro.devices[d].step, ro.devices[d].sent_at = DeviceStep.SENT, now


def test_a_failure_in_a_wave_halts_it_and_skips_the_rest():
    ro = _rollout([["a"], ["b", "c"]])
    _send(ro, 0)
    assert steps.observe(ro, "a", {"request_id": "ro-r1", "state": "failed", "reason": "golden"}, 1)
    assert steps.verdict(ro) is steps.Verdict.HALT
    steps.halt(ro, 2)
    assert ro.status is RolloutStatus.HALTED
    assert [ro.devices[d].step for d in "bc"] == [DeviceStep.SKIPPED] * 2
    assert "1 of 1 failed" in ro.halted_reason


def test_other_requests_and_pending_devices_are_ignored():
    ro = _rollout([["a"], ["b"]])
    _send(ro, 0)
    assert not steps.observe(ro, "a", {"request_id": "other", "state": "failed"}, 1)
    # b's retained state from before it was sent anything must not count
    assert not steps.observe(ro, "b", {"request_id": "ro-r1", "state": "active"}, 1)
    assert steps.observe(ro, "a", {"request_id": "ro-r1", "state": "active"}, 1)
    assert steps.verdict(ro) is steps.Verdict.NEXT
    steps.finish_wave(ro, 2)
    assert ro.wave == 1 and ro.status is RolloutStatus.RUNNING


def test_silent_devices_time_out_as_failures_and_late_answers_do_not_undo_it():
    ro = _rollout([["a", "b"]], threshold="1", timeout=10)
    _send(ro, 100)
    steps.observe(ro, "a", {"request_id": "ro-r1", "state": "active"}, 105)
    assert steps.expire(ro, 110) == []
    assert steps.expire(ro, 111) == ["b"]
    assert ro.devices["b"].step is DeviceStep.TIMEOUT
    assert not steps.observe(ro, "b", {"request_id": "ro-r1", "state": "active"}, 112)
    assert steps.verdict(ro) is steps.Verdict.NEXT  # 1 failure is not above 1


def test_time_the_operator_was_not_listening_is_not_counted_against_the_devices():
    ro = _rollout([["a", "b"], ["c"]], timeout=10)
    _send(ro, 100)
    steps.observe(ro, "a", {"request_id": "ro-r1", "state": "active"}, 101)
    steps.paused(ro, 300)  # suspended 300 s: b's answer may be waiting unread
    assert ro.devices["b"].sent_at == 400 and ro.devices["a"].sent_at == 100
    assert ro.devices["c"].sent_at is None  # not sent yet: nothing to shift
    assert steps.expire(ro, 405) == []
    assert steps.expire(ro, 411) == ["b"]  # silent 11 s of listening: times out


class _Clock:
    """time.monotonic and time.time of a process that gets suspended."""

    def __init__(self):
        self.mono, self.wall = 50.0, 1000.0

    def monotonic(self):
        return self.mono

    def time(self):
        return self.wall

    def advance(self, seconds):
        self.mono += seconds
        self.wall += seconds


def _suspended(clock):
    """The process is stopped (SIGSTOP): both clocks move on."""
    clock.advance(100)


def _asleep(clock):
    """The machine sleeps (a laptop's lid closed): CLOCK_MONOTONIC (time.monotonic on
    Linux) stands still; only the wall clock, the devices' timeout clock, jumps."""
    clock.wall += 100


@pytest.mark.parametrize("away", [_suspended, _asleep], ids=["suspended", "machine-slept"])
def test_a_runner_away_past_the_device_timeout_reads_the_answers_that_waited(
    tmp_path, monkeypatch, away
):
    clock = _Clock()
    monkeypatch.setattr(runner_module, "time", clock)
    store = RolloutStore(tmp_path)
    ro = _rollout([["a", "b"]], timeout=3)
    _send(ro, clock.wall)
    store.save(ro)
    done = {d: {"request_id": "ro-r1", "state": "active"} for d in "ab"}

    class Fleet:  # away 100 s mid-listen; the states wait on the socket
        model: dict = {}
        turns = 0

        def pump(self, until):
            self.turns += 1
            if self.turns == 1:
                away(clock)
                return []
            self.model = done
            clock.advance(0.25)
            return list(done)

    runner = runner_module.Runner(store, "r1", broker=None)
    verdict = runner._follow(ro, Fleet(), lambda r: None, until=None)
    assert verdict is steps.Verdict.NEXT
    assert [ro.devices[d].step for d in "ab"] == [DeviceStep.ACTIVE] * 2


def test_a_rollback_while_soaking_counts():
    ro = _rollout([["a", "b"]])
    _send(ro, 0)
    steps.observe(ro, "a", {"request_id": "ro-r1", "state": "active"}, 1)
    assert steps.observe(ro, "a", {"request_id": "ro-r1", "state": "rolled_back"}, 2)
    assert steps.verdict(ro) is steps.Verdict.HALT


def test_resume_resends_only_devices_with_no_trace_of_the_command():
    ro = _rollout([["a", "b", "c"]])
    for d in "abc":
        ro.devices[d].step = DeviceStep.SENDING  # the crash came after the intent
    ro.devices["c"].step = DeviceStep.PENDING
    # a's retained state shows it got the command; b's shows nothing
    answered = {"a"}
    assert steps.to_send(ro, answered) == ["b", "c"]
    assert steps.observe(ro, "a", {"request_id": "ro-r1", "state": "downloading"}, 5)
    assert ro.devices["a"].sent_at == 5  # its timeout runs from when we learnt of it


def test_an_abort_written_by_another_process_is_taken_in_not_overwritten():
    runner = _rollout([["a"], ["b", "c"]])
    _send(runner, 0)
    steps.observe(runner, "a", {"request_id": "ro-r1", "state": "active"}, 1)
    aborted = _rollout([["a"], ["b", "c"]])  # what `abort` wrote: an older view, aborted
    aborted.status = RolloutStatus.ABORTED
    aborted.devices["a"].rollback_sent = True
    assert steps.adopt(runner, aborted, 2)
    assert runner.status is RolloutStatus.ABORTED
    assert runner.devices["a"].step is DeviceStep.ACTIVE  # the runner's fresher state stays
    assert runner.devices["a"].rollback_sent
    assert [(runner.devices[d].step, runner.devices[d].reason) for d in "bc"] == [
        (DeviceStep.SKIPPED, "aborted")
    ] * 2
    assert not steps.adopt(runner, aborted, 3)  # once
    assert not steps.adopt(_rollout([["a"]]), None, 0)  # no file: nothing to take in


def test_store_round_trips_atomically(tmp_path):
    store = RolloutStore(tmp_path)
    ro = _rollout([["a"], ["b"]])
    ro.wave_started[0] = 1.5
    ro.devices["a"].step = DeviceStep.ROLLED_BACK
    store.save(ro)
    back = store.load("r1")
    assert back == ro
    assert back.plan.offline is OfflinePolicy.SKIP
    assert store.ids() == ["r1"]
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(ValueError):
        store.path("../etc/passwd")


def test_waiting_for_a_runner_that_does_not_end_gives_up(tmp_path):
    # abort --abort-rollback waits for a runner still driving the rollout (another
    # process) to see the abort and end; one that never does must not hold it forever.
    store = RolloutStore(tmp_path)
    # A runner that holds the run lock and never lets go:
    with store.running("r1"), pytest.raises(ModelUpdateError) as err, store.running("r1", 0.3):
        pytest.fail("the run lock was taken while a runner held it")
    assert err.value.reason == "rollout_busy"
    assert "still run by another process" in str(err.value)
    with store.running("r1", wait=0.3):  # once that runner has ended, at once
        pass


def test_resume_resends_sent_devices_whose_answer_left_no_trace_but_not_finished_ones():
    ro = _rollout([["a", "b", "c", "d"]])
    _send(ro, 0)
    steps.observe(ro, "c", {"request_id": "ro-r1", "state": "downloading"}, 1)
    steps.observe(ro, "d", {"request_id": "ro-r1", "state": "active"}, 1)
    # a and c restarted (their startup state replaced their answer); b's is on the broker;
    # d answered for good
    assert steps.to_send(ro, answered={"b"}) == ["a", "c"]
    assert ro.devices["a"].sent_at == 0  # asked again, on the same clock
