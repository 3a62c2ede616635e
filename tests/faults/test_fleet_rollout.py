"""Staged rollouts over 50 simulated devices on a real mosquitto (edge_agent/tools/fleet).

Each device runs the daemon's own update path with its own state dir; the release is the
demo model packed and signed by the operator's ``pack``, served by the lab server. A
separate subscriber counts the model commands each device received.

- 10 % of the devices rigged to fail the health check, ``1,5%,25%,100%`` with a 5 %
  threshold: the rollout halts in the first wave whose failures exceed the threshold,
  and no device of a later wave is touched.
- No rigged device: the rollout completes, every device on the new release, one
  command each.
- The operator's ``edge-agent model rollout start`` SIGKILLed mid-rollout, then
  ``resume`` in a new process: it completes, and no device got the command twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager

import pytest

from edge_agent.publishing.settings import MqttSettings
from edge_agent.tools.fleet.bench import GROUP, demo_fleet, make_release
from edge_agent.tools.fleet.fleet import Fleet
from edge_agent.tools.release.lab_server import LabServer
from edge_agent.tools.release.rollout.plan import Plan, should_halt
from edge_agent.tools.release.rollout.runner import Runner, start
from edge_agent.tools.release.rollout.store import (
    DeviceStep,
    Rollout,
    RolloutStatus,
    RolloutStore,
)
from edge_agent.updates.manifest import MANIFEST_FILE, parse_manifest
from edge_agent.updates.signing import load_envelope, parse_envelope
from tests.support.broker import MOSQUITTO, MosquittoBroker, MqttSubscriber, wait_until
from tests.support.chaos import figure
from tests.support.paths import REPO

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(420),
    pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (apt-get install mosquitto)"),
]

SIZE = 50
WAVES = "1,5%,25%,100%"


@contextmanager
def lab(tmp_path, rigged: float):
    """A broker, 50 agents, the signed release served; yields (fleet, broker, url, counter)."""
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    release, public = make_release(tmp_path)
    manifest = parse_manifest(
        parse_envelope(load_envelope((release / MANIFEST_FILE).read_bytes())).manifest
    )
    server = LabServer(release, [f.name for f in manifest.files], host="127.0.0.1", port=0,
                       timeout=600).start()  # fmt: skip
    settings = demo_fleet(SIZE, tmp_path / "agents", public, broker.host, broker.port,
                          processes=2, rigged=rigged, seed=14)  # fmt: skip
    counter = MqttSubscriber(broker.host, broker.port, [f"{settings.prefix}/+/cmd/model/+"])
    counter.start()
    try:
        with Fleet(settings) as fleet:
            yield fleet, broker, server.url, counter, release
    finally:
        counter.stop()
        server.stop()
        broker.stop()


def commands(counter) -> Counter:
    """Model commands received per device."""
    out: Counter = Counter()
    for topic, n in list(counter.counts.items()):
        out[topic.split("/")[1]] += n
    return out


def planned(tmp_path, broker, url, release) -> tuple[Plan, Rollout, Runner]:
    """``model rollout start`` (the API) for the group with WAVES and a 5 % threshold,
    and the runner that drives it."""
    mqtt = MqttSettings(host=broker.host, port=broker.port, connect_timeout=10.0)
    store = RolloutStore(tmp_path / "ops")
    plan = Plan.parse(WAVES, "5%", device_timeout=120)
    ro = start(release, group=GROUP, plan=plan, broker=mqtt, prefix="fleet", base_url=url,
               store=store, discover_seconds=3.0)  # fmt: skip
    return plan, ro, Runner(store, ro.id, mqtt)


def test_ten_percent_rigged_halts_in_the_first_wave_over_the_threshold(tmp_path):
    with lab(tmp_path, 0.1) as (fleet, broker, url, counter, release):
        plan, ro, runner = planned(tmp_path, broker, url, release)
        assert sorted(d for w in ro.waves for d in w) == fleet.device_ids  # all found
        assert [len(w) for w in ro.waves] == [1, 2, 10, 37]
        # Where it must stop: the first wave whose rigged devices exceed 5 % of it.
        rigged = fleet.rigged
        halting = next(
            i for i, wave in enumerate(ro.waves, 1)
            if should_halt(plan.threshold, len(rigged & set(wave)), len(wave))
        )  # fmt: skip
        final = runner.run()
        assert final.status is RolloutStatus.HALTED
        assert final.halted_reason.startswith(f"wave {halting}:"), final.halted_reason
        touched = {d for w in ro.waves[:halting] for d in w}
        wait_until(lambda: set(commands(counter)) >= touched, 10, "every touched device's count")
        assert set(commands(counter)) == touched  # nobody of a later wave got a command
        later = {d for w in ro.waves[halting:] for d in w}
        assert {d for d, r in final.devices.items() if r.step is DeviceStep.SKIPPED} >= later
        for device in rigged & touched:  # rolled back by themselves: the old model serves
            assert final.devices[device].step in (DeviceStep.FAILED, DeviceStep.ROLLED_BACK)
        outcomes = fleet.wait_terminal(ro.request_id, 30)
        assert all(outcomes[d].state == "rolled_back" for d in rigged & touched)
        assert all(outcomes[d].active and outcomes[d].version == "2" for d in touched - rigged)
        figure(
            "fleet_rollout_halt",
            devices=SIZE,
            rigged=len(rigged),
            waves=[len(w) for w in ro.waves],
            halted_in_wave=halting,
            touched=len(touched),
            planned=SIZE,
        )


def test_a_clean_release_completes_with_one_command_per_device(tmp_path):
    with lab(tmp_path, 0.0) as (fleet, broker, url, counter, release):
        _plan, ro, runner = planned(tmp_path, broker, url, release)
        final = runner.run()
        assert final.status is RolloutStatus.COMPLETED
        assert all(r.step is DeviceStep.ACTIVE for r in final.devices.values())
        wait_until(lambda: len(commands(counter)) == SIZE, 10, "every device's command")
        assert commands(counter) == dict.fromkeys(fleet.device_ids, 1)
        outcomes = fleet.wait_terminal(ro.request_id, 30)
        assert all(o.active and o.version == "2" for o in outcomes.values())


def _cli(*args, state_dir, broker) -> list[str]:
    net = ["--broker", f"{broker.host}:{broker.port}", "--state-dir", str(state_dir), "--json"]
    return [sys.executable, "-m", "edge_agent", "model", "rollout", *args, *net]


def test_the_operator_killed_mid_rollout_resumes_and_no_device_gets_it_twice(tmp_path):
    with lab(tmp_path, 0.0) as (fleet, broker, url, counter, release):
        ops = tmp_path / "ops"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = _cli("start", str(release), "--group", GROUP, "--waves", WAVES,
                    "--threshold", "5%", "--base-url", url, "--discover", "3",
                    "--device-timeout", "120", "--id", "crash-1", "--prefix", "fleet",
                    state_dir=ops, broker=broker)  # fmt: skip
        operator = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)  # fmt: skip
        try:
            # Killed once the third wave's commands are going out: mid-rollout.
            wait_until(lambda: len(commands(counter)) > 3 or operator.poll() is not None,
                       120, "the third wave's first command")  # fmt: skip
            operator.send_signal(signal.SIGKILL)
        finally:
            operator.wait(10)
        assert operator.returncode == -signal.SIGKILL
        crashed = RolloutStore(ops).load("crash-1")
        assert crashed.status is RolloutStatus.RUNNING and crashed.wave >= 2  # in wave 3 or 4
        before = dict(commands(counter))
        resume = subprocess.run(_cli("resume", "crash-1", "--base-url", url,
                                     state_dir=ops, broker=broker),
                                env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert resume.returncode == 0, resume.stderr[-2000:]
        doc = json.loads(resume.stdout)
        assert doc["status"] == "completed", doc
        wait_until(lambda: len(commands(counter)) == SIZE, 10, "every device's command")
        assert commands(counter) == dict.fromkeys(fleet.device_ids, 1)  # none twice
        outcomes = fleet.wait_terminal(crashed.request_id, 30)
        assert all(o.active and o.version == "2" for o in outcomes.values())
        figure("fleet_rollout_crash", devices=SIZE, sent_before_kill=sum(before.values()),
               resumed_wave=crashed.wave)  # fmt: skip
