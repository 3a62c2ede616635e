"""Pure parts of the daemon's health check and of the states it adds to the installer's."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from edge_agent.daemon.trial import Counters, HealthWatch, Outcome, judge
from edge_agent.daemon.update_inbox import acts
from edge_agent.daemon.update_states import interruption
from edge_agent.errors import ModelUpdateError
from edge_agent.updates.agent import Queued
from edge_agent.updates.commands import CommandPolicy

START = Counters(100, 2, "")


def test_judge_needs_the_frames_and_fails_on_any_error():
    assert judge(START, Counters(102, 2, ""), need=3) is None
    assert judge(START, Counters(103, 2, ""), need=3).outcome is Outcome.HEALTHY
    bad = judge(START, Counters(100, 3, "invoke failed"), need=3)
    assert bad.outcome is Outcome.UNHEALTHY and "invoke failed" in bad.detail


def test_no_frames_never_passes_however_long_it_waits():
    clock = iter(float(t) for t in range(0, 10**6, 1000))  # 1000 s per look
    looks = []

    def counters():  # the camera stays down: no frame ever
        looks.append(1)
        return START

    waited = []
    verdict = HealthWatch(
        counters,
        3,
        threading.Event(),
        grace=10.0,
        on_waiting=waited.append,
        # ~14 hours of waiting, then a command comes
        yield_to=lambda: "rollback request rb arrived" if len(looks) > 50 else None,
        clock=lambda: next(clock),
    ).run()
    assert verdict.outcome is Outcome.SUPERSEDED and verdict.frames == 0
    assert waited == [0]  # reported once


def test_a_stop_proves_nothing():
    stop = threading.Event()
    stop.set()
    verdict = HealthWatch(
        lambda: START, 3, stop, grace=0.0, on_waiting=lambda n: None, yield_to=lambda: None
    ).run()
    assert verdict.outcome is Outcome.STOPPED


def test_an_interrupted_health_check_reads_failed_interrupted_for_the_release_asked():
    asked = {"state": "installing", "name": "cls", "version": "2.0.0", "request_id": "r"}
    state = {
        "state": "rolled_back", "name": "cls", "version": "1.0.0", "reason": "interrupted",
        "message": "cls@2.0.0: the daemon stopped", "request_id": "r",
        "from_version": "cls@2.0.0", "percent": None,
    }  # fmt: skip
    out = interruption(state, asked)
    assert (out["state"], out["reason"], out["version"]) == ("failed", "interrupted", "2.0.0")
    assert "from_version" not in out
    unhealthy = {**state, "reason": "health_check_failed"}
    assert interruption(unhealthy, asked) == unhealthy  # a real verdict stays as it is


def test_a_trial_gives_way_only_to_a_command_that_would_change_the_model():
    fetched = []

    def envelope_of(command):
        fetched.append(command.manifest_url)
        if command.manifest_url.endswith("gone.json"):
            raise ModelUpdateError("http_error", "404")
        return {"manifest": "newer"}

    installer = SimpleNamespace(
        settings=SimpleNamespace(policy=CommandPolicy),
        envelope_of=envelope_of,
        precheck=lambda envelope, force: (envelope, None),  # accepted, not installed
    )
    assert acts(installer, Queued("rollback", b'{"request_id": "rb"}', None))
    # A manifest_url is judged on the manifest it names; one that cannot be fetched waits.
    assert acts(installer, Queued("update", b'{"manifest_url": "https://h/m.json"}', None))
    assert not acts(installer, Queued("update", b'{"manifest_url": "https://h/gone.json"}', None))
    assert fetched == ["https://h/m.json", "https://h/gone.json"]
    for kind, payload in [("update", b'{"request_id": "junk"}'), ("rollback", b'{"x": 1}')]:
        with pytest.raises(ModelUpdateError) as err:
            acts(installer, Queued(kind, payload, None))
        assert err.value.reason == "bad_command"
