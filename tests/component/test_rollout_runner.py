"""Staged rollouts through a real mosquitto to devices running the real update runner.

Each device is the device-side update path (UpdateRunner with its request ledger, the
real UpdateInstaller, download over HTTP from the lab server, signature checks, the
store) behind its own MQTT session that publishes retained ``status``/``available``/
``model`` as the daemon does. A separate subscriber counts commands per device.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from edge_agent.errors import ModelUpdateError
from edge_agent.publishing.settings import MqttSettings
from edge_agent.tools.release import operator
from edge_agent.tools.release.lab_server import LabServer
from edge_agent.tools.release.push import _Link
from edge_agent.tools.release.rollout.plan import Plan
from edge_agent.tools.release.rollout.report import summary, table
from edge_agent.tools.release.rollout.runner import Runner, abort, start
from edge_agent.tools.release.rollout.store import DeviceStep, RolloutStatus, RolloutStore
from edge_agent.updates.agent import UpdateRunner
from edge_agent.updates.commands import state_topic
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.manifest import MANIFEST_FILE, parse_manifest
from edge_agent.updates.signing import TrustedKeys, load_envelope, parse_envelope
from edge_agent.updates.store import ModelStore
from edge_agent.updates.transport import DownloadSettings
from tests.support.broker import MqttSubscriber, wait_until
from tests.support.updates_release import fake_tflite

PREFIX = "fleet"


class Device:
    """One device: MQTT commands -> the real UpdateRunner -> retained states."""

    def __init__(self, broker, tmp, device_id, public_key, groups, validator=None):
        self.id = device_id
        topics = [f"{PREFIX}/{device_id}/cmd/model/#"]
        self.client = MqttSubscriber(broker.host, broker.port, topics, name=device_id).start()
        installer = UpdateInstaller(
            ModelStore(tmp / device_id, keep_versions=2),
            TrustedKeys.from_paths([public_key]),
            UpdateSettings(download=DownloadSettings(allow_http=True, retries=0, read_timeout=5)),
            validator=validator,
            progress=lambda s: self.client.publish(
                state_topic(PREFIX, device_id), json.dumps(s), 1, retain=True
            ),
        )
        self.runner = UpdateRunner(installer).start()
        status = {"state": "running", "device_id": device_id, "groups": list(groups)}
        self.client.publish(f"{PREFIX}/{device_id}/status", json.dumps(status), 1, retain=True)
        self.client.publish(f"{PREFIX}/{device_id}/available", "online", 1, retain=True)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"device-{device_id}")
        self.thread.start()

    def _run(self):
        seen = 0
        while not self.stop.is_set():
            msg = self.client.message(seen, timeout=0.1)
            if msg is not None:
                seen += 1
                self.runner.handle("", msg.payload, msg.topic)  # kind from the topic

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.runner.stop(timeout=10)
        self.client.stop()


@pytest.fixture
def broker(mqtt_broker_factory):
    b = mqtt_broker_factory("mosquitto")
    return MqttSettings(host=b.host, port=b.port, connect_timeout=10.0)


@pytest.fixture
def release(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    operator.keygen(keys / "k.key", keys / "k.pub")
    src = tmp_path / "src"
    src.mkdir()
    (src / "m_edgetpu.tflite").write_bytes(fake_tflite(50_000, seed=1))
    (src / "m.tflite").write_bytes(fake_tflite(40_000, seed=2))
    rel = operator.pack(
        tmp_path / "rel", name="det", version="2.0.0", model=src / "m_edgetpu.tflite",
        cpu_model=src / "m.tflite", task="classification", private_key=keys / "k.key",
    )  # fmt: skip
    return rel, keys / "k.pub"


@pytest.fixture
def fleet(broker, tmp_path, release):
    made = []

    def make(n, group="lobby", failing=()):
        def broken(path, manifest):
            raise ModelUpdateError("golden_mismatch", "outputs differ on this scene")

        for i in range(n):
            name = f"d{i:02d}"
            made.append(Device(broker, tmp_path / "devices", name, release[1], [group],
                               broken if name in failing else None))  # fmt: skip
        return made

    yield make
    for d in made:
        d.close()


@pytest.fixture
def commands(broker):
    sub = MqttSubscriber(broker.host, broker.port, [f"{PREFIX}/+/cmd/model/+"]).start()

    def per_device():
        out = Counter()
        for topic, n in list(sub.counts.items()):
            out[topic.split("/")[1]] += n
        return out

    yield per_device
    sub.stop()


@pytest.fixture
def served(release):
    rel = release[0]
    manifest = parse_manifest(
        parse_envelope(load_envelope((rel / MANIFEST_FILE).read_bytes())).manifest
    )
    server = LabServer(rel, [f.name for f in manifest.files], host="127.0.0.1", port=0,
                       timeout=300).start()  # fmt: skip
    yield server.url
    server.stop()


def _start(release, broker, served, tmp_path, plan, **kw):
    store = RolloutStore(tmp_path / "rollouts")
    ro = start(release[0], group="lobby", plan=plan, broker=broker, prefix=PREFIX,
               base_url=served, store=store, discover_seconds=1.0, **kw)  # fmt: skip
    return store, ro


def test_a_rollout_completes_wave_by_wave_with_one_command_per_device(
    broker, tmp_path, release, fleet, commands, served
):
    devices = fleet(6)
    plan = Plan.parse("1,50%,100%", "0", device_timeout=30)
    store, ro = _start(release, broker, served, tmp_path, plan)
    assert [len(w) for w in ro.waves] == [1, 2, 3]
    seen = []
    final = Runner(store, ro.id, broker).run(progress=lambda r: seen.append(r.wave))
    assert final.status is RolloutStatus.COMPLETED, table(final)
    assert all(r.step is DeviceStep.ACTIVE for r in final.devices.values())
    wait_until(lambda: len(commands()) == 6, 10, "the counter to see every command")
    assert commands() == {d.id: 1 for d in devices}
    assert seen == sorted(seen) and seen[-1] == 3
    doc = summary(store.load(ro.id))
    assert [w["counts"] for w in doc["waves"]] == [{"active": 1}, {"active": 2}, {"active": 3}]
    assert all(d["seconds"] is not None for d in doc["devices"].values())


def test_a_release_failing_on_some_devices_halts_in_the_wave_where_it_appears(
    broker, tmp_path, release, fleet, commands, served
):
    # waves for 10 devices: 1 (d00), then 25% -> d01,d02, then the rest; d02 fails
    fleet(10, failing={"d02", "d07"})
    plan = Plan.parse("1,5%,25%,100%", "10%", device_timeout=30)
    store, ro = _start(release, broker, served, tmp_path, plan)
    assert [len(w) for w in ro.waves] == [1, 2, 7]
    final = Runner(store, ro.id, broker).run()
    assert final.status is RolloutStatus.HALTED
    assert final.halted_reason.startswith("wave 2: 1 of 2 failed")
    assert final.devices["d02"].step is DeviceStep.FAILED
    assert final.devices["d02"].reason == "golden_mismatch"
    assert {d for d, r in final.devices.items() if r.step is DeviceStep.SKIPPED} == {
        f"d{i:02d}" for i in range(3, 10)
    }
    assert set(commands()) == {"d00", "d01", "d02"}  # nobody in wave 3 was touched
    assert summary(final)["touched"] == 3


def test_an_operator_crash_mid_wave_then_resume_sends_no_device_the_command_twice(
    broker, tmp_path, release, fleet, commands, served, monkeypatch
):
    fleet(6)
    plan = Plan.parse("2,100%", "0", device_timeout=30)
    store, ro = _start(release, broker, served, tmp_path, plan)
    real_publish, real_save = _Link.publish, RolloutStore.save
    sent = []

    def dies_after_the_fourth(self, topic, payload):
        real_publish(self, topic, payload)  # the command is out...
        if "/cmd/model/" in topic:  # not the status request the runner sends first
            sent.append(topic)
        if len(sent) == 4:  # ...and the operator dies before recording it
            monkeypatch.setattr(
                RolloutStore, "save", lambda *a: None
            )  # a dead process writes nothing
            raise KeyboardInterrupt

    monkeypatch.setattr(_Link, "publish", dies_after_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        Runner(store, ro.id, broker).run()
    monkeypatch.setattr(_Link, "publish", real_publish)
    monkeypatch.setattr(RolloutStore, "save", real_save)
    crashed = store.load(ro.id)
    assert crashed.status is RolloutStatus.RUNNING and crashed.wave == 1
    assert crashed.devices["d03"].step is DeviceStep.SENDING  # sent, not recorded
    assert crashed.devices["d04"].step is DeviceStep.SENDING  # recorded intent, not sent
    # the device that got it answers on its retained state before the operator returns
    watcher = MqttSubscriber(broker.host, broker.port, [state_topic(PREFIX, "d03")]).start()
    wait_until(lambda: (watcher.last_json(state_topic(PREFIX, "d03")) or {}).get("request_id")
               == ro.request_id, 10, "d03's state")  # fmt: skip
    watcher.stop()
    final = Runner(store, ro.id, broker).run()
    assert final.status is RolloutStatus.COMPLETED, table(final)
    wait_until(lambda: len(commands()) == 6, 10, "the counter to see every command")
    assert commands() == {f"d{i:02d}": 1 for i in range(6)}


def test_abort_with_rollback_rolls_back_the_updated_devices(
    broker, tmp_path, release, fleet, commands, served
):
    fleet(3)
    store, ro = _start(release, broker, served, tmp_path, Plan.parse("1,100%", "0"))
    runner = Runner(store, ro.id, broker)
    runner.run(progress=lambda r: r.wave >= 1 and runner.stop.set())
    stopped = store.load(ro.id)
    assert stopped.status is RolloutStatus.RUNNING  # Ctrl-C leaves it resumable
    aborted = abort(store, ro.id, broker, rollback=True)
    assert aborted.status is RolloutStatus.ABORTED
    assert aborted.devices["d00"].rollback_sent
    assert {d for d, r in aborted.devices.items() if r.step is DeviceStep.SKIPPED} == {"d01", "d02"}
    watcher = MqttSubscriber(broker.host, broker.port, [state_topic(PREFIX, "d00")]).start()
    wait_until(lambda: (watcher.last_json(state_topic(PREFIX, "d00")) or {}).get("request_id")
               == f"{ro.request_id}-rb", 10, "d00's rollback answer")  # fmt: skip
    watcher.stop()
    assert commands() == {"d00": 2}  # the update, then the rollback


def test_cli_start_status_and_list_print_the_report(
    broker, tmp_path, release, fleet, served, capsys
):
    from edge_agent.cli import main

    fleet(3, failing={"d00"})
    state = str(tmp_path / "ops")
    net = ["--broker", f"{broker.host}:{broker.port}", "--state-dir", state, "--json"]
    code = main(["model", "rollout", "start", str(release[0]), "--group", "lobby",
                 "--waves", "1,100%", "--threshold", "0", "--base-url", served,
                 "--discover", "1", "--id", "cli-1", "--prefix", PREFIX, *net])  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out, captured.err
    out = json.loads(captured.out)
    assert code == 1
    assert out["status"] == "halted" and out["touched"] == 1
    assert out["devices"]["d00"] == {
        "wave": 1, "state": "failed", "reason": "golden_mismatch",
        "seconds": out["devices"]["d00"]["seconds"], "rollback_sent": False,
    }  # fmt: skip
    assert main(["model", "rollout", "status", "cli-1", "--state-dir", state]) == 0
    text = capsys.readouterr().out
    assert "halted: wave 1: 1 of 1 failed (threshold 0)" in text
    assert "d01" in text and "skipped" in text
    assert main(["model", "rollout", "list", "--state-dir", state]) == 0
    assert capsys.readouterr().out.startswith("cli-1  halted")
    # A damaged rollout file is named, and the others are still listed (as text and JSON).
    (Path(state) / "cli-0.json").write_text('{"broken')
    assert main(["model", "rollout", "list", "--state-dir", state]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("cli-1  halted"), captured
    assert "bad_rollout" in captured.err and "cli-0.json" in captured.err
    assert main(["model", "rollout", "list", "--state-dir", state, "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == ["cli-0", "cli-1"]
    assert "bad_rollout" in listed[0]["error"]
    assert listed[1] == {"id": "cli-1", "status": "halted", "label": listed[1]["label"],
                         "group": "lobby", "devices": 3}  # fmt: skip
    # a halted rollout resumes to the same verdict, sending nothing
    assert main(["model", "rollout", "resume", "cli-1", "--base-url", served, *net]) == 1


def test_offline_members_are_skipped_or_refuse_the_start(broker, tmp_path, release, fleet, served):
    devices = fleet(3)
    # d01's last will: the broker marks it offline, its retained status still lists the group
    devices[1].client.publish(f"{PREFIX}/d01/available", "offline", 1, retain=True)
    with pytest.raises(ModelUpdateError, match="devices_offline.*d01"):
        _start(release, broker, served, tmp_path, Plan.parse("100%", "0", offline="fail"))
    _, ro = _start(release, broker, served, tmp_path, Plan.parse("100%", "0"))
    assert ro.left_out == {"d01": "offline"} and sorted(ro.devices) == ["d00", "d02"]
    # wait: a device that comes back within the wait is taken in
    back = threading.Timer(
        0.5, lambda: devices[1].client.publish(f"{PREFIX}/d01/available", "online", 1, retain=True)
    )
    back.start()
    plan = Plan.parse("100%", "0", offline="wait", offline_wait=10)
    _, ro = _start(release, broker, served, tmp_path, plan)
    back.join(5)
    assert ro.left_out == {} and sorted(ro.devices) == ["d00", "d01", "d02"]


def test_abort_from_another_process_stops_a_running_rollout_before_its_next_wave(
    broker, tmp_path, release, fleet, commands, served
):
    # The runner soaks after wave 1; meanwhile `rollout abort` runs as another process.
    # It used to write the file, then the runner overwrote it and sent wave 2 anyway.
    import os
    import subprocess
    import sys

    from tests.support.paths import REPO

    fleet(4)
    store, ro = _start(release, broker, served, tmp_path, Plan.parse("1,100%", "0", soak=30))
    argv = [sys.executable, "-m", "edge_agent", "model", "rollout", "abort", ro.id,
            "--state-dir", str(store.dir)]  # fmt: skip
    aborts = []

    def abort_once_canary_is_active(r):
        if r.devices["d00"].step is DeviceStep.ACTIVE and not aborts:
            aborts.append(subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO)}))

    final = Runner(store, ro.id, broker).run(progress=abort_once_canary_is_active)
    assert aborts[0].wait(60) == 0
    assert final.status is RolloutStatus.ABORTED, table(final)
    on_disk = store.load(ro.id)
    assert on_disk.status is RolloutStatus.ABORTED
    assert on_disk.devices["d00"].step is DeviceStep.ACTIVE
    skipped = {d: (r.step, r.reason) for d, r in on_disk.devices.items() if d != "d00"}
    assert skipped == dict.fromkeys(["d01", "d02", "d03"], (DeviceStep.SKIPPED, "aborted"))
    assert commands() == {"d00": 1}  # nobody of wave 2 was sent the update


def test_start_with_the_id_of_a_stored_rollout_is_refused_and_keeps_its_record(
    broker, tmp_path, release, fleet, commands, served
):
    # `start --id X` again (a retried CI job) used to overwrite X's record and run it anew
    fleet(2, failing={"d00"})
    store, ro = _start(
        release, broker, served, tmp_path, Plan.parse("1,100%", "0"), rollout_id="x1"
    )
    assert Runner(store, "x1", broker).run().status is RolloutStatus.HALTED
    with pytest.raises(ModelUpdateError, match="rollout_exists.*resume x1"):
        _start(release, broker, served, tmp_path, Plan.parse("1,100%", "0"), rollout_id="x1")
    kept = store.load("x1")
    assert kept.status is RolloutStatus.HALTED and kept.halted_reason.startswith("wave 1: 1 of 1")
    assert kept.devices["d01"].step is DeviceStep.SKIPPED


def test_a_second_runner_of_a_running_rollout_is_refused(
    broker, tmp_path, release, fleet, commands, served
):
    # Two `resume`s of one rollout (two operators, a retried job) each sent every command.
    fleet(3)
    store, ro = _start(release, broker, served, tmp_path, Plan.parse("1,100%", "0"))
    refused = []

    def second_operator(_r):
        if not refused:
            with pytest.raises(ModelUpdateError, match="rollout_busy") as caught:
                Runner(store, ro.id, broker).run()
            refused.append(caught.value)

    final = Runner(store, ro.id, broker).run(progress=second_operator)
    assert refused and final.status is RolloutStatus.COMPLETED
    wait_until(lambda: len(commands()) == 3, 10, "the counter to see every command")
    assert commands() == {"d00": 1, "d01": 1, "d02": 1}
    assert Runner(store, ro.id, broker).run().status is RolloutStatus.COMPLETED  # lock freed


def test_abort_with_rollback_also_rolls_back_a_device_that_turns_active_after_it(
    broker, tmp_path, release, commands, served
):
    # d00 is still verifying the release when the operator aborts with --abort-rollback;
    # it turns active afterwards: the rollout made it active too, so it must be rolled back.
    verifying, finish = threading.Event(), threading.Event()

    def slow(path, manifest):
        verifying.set()
        assert finish.wait(30)

    devices = [Device(broker, tmp_path / "devices", "d00", release[1], ["lobby"], slow),
               Device(broker, tmp_path / "devices", "d01", release[1], ["lobby"])]  # fmt: skip
    try:
        store, ro = _start(release, broker, served, tmp_path, Plan.parse("100%", "0"))
        runner = Runner(store, ro.id, broker)
        runner.run(progress=lambda r: r.devices["d01"].step is DeviceStep.ACTIVE
                   and verifying.is_set() and runner.stop.set())  # fmt: skip
        result = []
        aborter = threading.Thread(
            target=lambda: result.append(abort(store, ro.id, broker, rollback=True))
        )
        aborter.start()
        finish.set()  # d00 ends its install after the abort began
        aborter.join(60)
        assert result, "abort did not return"
        aborted = result[0]
        assert aborted.devices["d01"].rollback_sent
        assert aborted.devices["d00"].step is DeviceStep.ACTIVE, table(aborted)
        assert aborted.devices["d00"].rollback_sent, table(aborted)
        watcher = MqttSubscriber(broker.host, broker.port, [state_topic(PREFIX, "d00")]).start()
        wait_until(lambda: (watcher.last_json(state_topic(PREFIX, "d00")) or {}).get("request_id")
                   == f"{ro.request_id}-rb", 10, "d00's rollback answer")  # fmt: skip
        watcher.stop()
    finally:
        finish.set()
        for d in devices:
            d.close()


def test_abort_with_rollback_while_the_runner_sends_a_wave_rolls_back_what_it_sent(
    broker, tmp_path, release, fleet, served, monkeypatch
):
    # `rollout abort --abort-rollback` from another terminal lands while the runner is in
    # the middle of publishing a wave: the devices are marked `sending`, not yet `sent`.
    # The runner sends them the update anyway; they turn active and must be rolled back.
    from edge_agent.tools.release.push import _Link
    from edge_agent.tools.release.rollout import runner as runner_module

    fleet(2)
    store, ro = _start(release, broker, served, tmp_path, Plan.parse("100%", "0"))
    reached, go = threading.Event(), threading.Event()

    def publish(self, topic, payload):
        if topic.endswith("/cmd/model/update") and not go.is_set():
            reached.set()
            assert go.wait(30)
        _Link.publish(self, topic, payload)

    monkeypatch.setattr(runner_module._StatusLink, "publish", publish)
    finished = []
    driver = threading.Thread(target=lambda: finished.append(Runner(store, ro.id, broker).run()))
    driver.start()
    result = []
    try:
        assert reached.wait(30)
        aborter = threading.Thread(
            target=lambda: result.append(abort(store, ro.id, broker, rollback=True))
        )
        aborter.start()
        wait_until(lambda: store.load(ro.id).status is RolloutStatus.ABORTED, 10, "the abort")
    finally:
        go.set()
    driver.join(60)
    aborter.join(60)
    assert result, "abort did not return"
    assert finished[0].status is RolloutStatus.ABORTED
    aborted = result[0]
    for device in ("d00", "d01"):
        assert aborted.devices[device].step is DeviceStep.ACTIVE, table(aborted)
        assert aborted.devices[device].rollback_sent, table(aborted)


def test_abort_with_rollback_after_the_runner_died_mid_wave_rolls_back_what_it_sent(
    broker, tmp_path, release, fleet, served
):
    # The runner marked the wave `sending`, sent d00 the update, and was SIGKILLed before
    # writing so. `rollout abort --abort-rollback`: d00 did get it (its state carries the
    # rollout's request id) and turned active, so it is rolled back; d01 never got it.
    fleet(2)
    store, ro = _start(release, broker, served, tmp_path, Plan.parse("100%", "0"))
    with store.locked(ro.id):
        intent = store.load(ro.id)
        for record in intent.devices.values():
            record.step = DeviceStep.SENDING
        store.save(intent)
    sender = MqttSubscriber(broker.host, broker.port, [state_topic(PREFIX, "d00")]).start()
    try:
        sender.publish(f"{PREFIX}/d00/cmd/model/update", ro.payload.encode(), 1)
        wait_until(lambda: (sender.last_json(state_topic(PREFIX, "d00")) or {}).get("state")
                   == "active", 20, "d00 to install")  # fmt: skip
        aborted = abort(store, ro.id, broker, rollback=True)
        assert aborted.devices["d00"].step is DeviceStep.ACTIVE, table(aborted)
        assert aborted.devices["d00"].rollback_sent, table(aborted)
        assert (aborted.devices["d01"].step, aborted.devices["d01"].rollback_sent) == (
            DeviceStep.SKIPPED, False
        )  # fmt: skip
        wait_until(lambda: (sender.last_json(state_topic(PREFIX, "d00")) or {}).get("request_id")
                   == f"{ro.request_id}-rb", 10, "d00's rollback answer")  # fmt: skip
    finally:
        sender.stop()
