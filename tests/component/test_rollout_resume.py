"""Resuming a rollout whose devices' answers are no longer on the broker.

The operator's process dies after a wave was sent and recorded; meanwhile the devices
answer, then restart, and a restarted device's retained ``model`` state is its startup
state (no request id): the answer left no trace. Resumed, the rollout must find out from
the devices, not count them silent: the README's "only a device with no trace of the
command is sent it again", and the device's request ledger answers the repeat.
"""

from __future__ import annotations

import json

import pytest

from edge_agent.tools.release.rollout.plan import Plan
from edge_agent.tools.release.rollout.report import table
from edge_agent.tools.release.rollout.runner import Runner
from edge_agent.tools.release.rollout.store import DeviceStep, RolloutStatus
from edge_agent.updates.commands import state_topic
from tests.component import test_rollout_runner as fixtures
from tests.support.broker import MqttSubscriber, wait_until

PREFIX, _start = fixtures.PREFIX, fixtures._start
broker, release, fleet, commands, served = (
    fixtures.broker,
    fixtures.release,
    fixtures.fleet,
    fixtures.commands,
    fixtures.served,
)  # the fixtures of the rollout runner's tests


def test_resume_asks_again_devices_whose_answer_a_restart_wiped(
    broker,
    tmp_path,
    release,
    fleet,
    commands,
    served,
    monkeypatch,
):
    devices = fleet(3)
    plan = Plan.parse("100%", "0", device_timeout=8)
    store, ro = _start(release, broker, served, tmp_path, plan)

    def dies_after_sending(self, *a, **kw):
        raise KeyboardInterrupt  # the operator is gone once the wave is sent and recorded

    monkeypatch.setattr(Runner, "_follow", dies_after_sending)
    with pytest.raises(KeyboardInterrupt):
        Runner(store, ro.id, broker).run()
    monkeypatch.undo()
    crashed = store.load(ro.id)
    assert {r.step for r in crashed.devices.values()} == {DeviceStep.SENT}, table(crashed)

    topics = [state_topic(PREFIX, d.id) for d in devices]
    watcher = MqttSubscriber(broker.host, broker.port, topics).start()
    try:
        for d, topic in zip(devices, topics):
            wait_until(lambda t=topic: (watcher.last_json(t) or {}).get("state") == "active",
                       10, f"{d.id} active")  # fmt: skip
            # The device restarts: its startup state replaces the retained answer.
            startup = {"state": "active", "name": "det", "version": "2.0.0", "percent": 100,
                       "reason": None, "message": None, "request_id": None}  # fmt: skip
            d.client.publish(topic, json.dumps(startup), 1, retain=True)
            wait_until(lambda t=topic: (watcher.last_json(t) or {}).get("request_id") is None,
                       10, f"{d.id} restarted")  # fmt: skip
    finally:
        watcher.stop()

    final = Runner(store, ro.id, broker).run()
    assert final.status is RolloutStatus.COMPLETED, table(final)
    assert all(r.step is DeviceStep.ACTIVE for r in final.devices.values()), table(final)
    # Asked again, each device answered from its request ledger: one install each.
    for d in devices:
        assert [r.version for r in d.runner.installer.store.installed()] == ["2.0.0"]
