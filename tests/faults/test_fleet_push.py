"""A group push over 50 simulated devices on a real mosquitto (edge_agent/tools/fleet).

Each device runs the daemon's own update path (publisher, update service, supervisor,
pipeline) with its own state dir; the release is the demo model packed and signed by
the operator's ``pack`` and served by ``push``'s lab server. Outcomes are read from each
device's retained model state, as an operator reads them.
"""

from __future__ import annotations

import pytest

from edge_agent.publishing.settings import MqttSettings
from edge_agent.tools.fleet.bench import GROUP, MODEL_NAME, demo_fleet, make_release
from edge_agent.tools.fleet.fleet import Fleet
from edge_agent.tools.release.push import ServeSettings, push
from tests.support.broker import MOSQUITTO, MosquittoBroker

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(300),
    pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (apt-get install mosquitto)"),
]

SIZE = 50


def _push_fleet(tmp_path, rigged: float):
    """Start 50 agents, push v2 to their group; (fleet outcomes, push report, fleet, code)."""
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    release, public = make_release(tmp_path)
    settings = demo_fleet(SIZE, tmp_path / "agents", public, broker.host, broker.port,
                          processes=2, rigged=rigged, seed=14)  # fmt: skip
    reports: dict[str, dict] = {}
    try:
        with Fleet(settings) as fleet:
            code = push(
                release,
                broker=MqttSettings(host=broker.host, port=broker.port),
                prefix=settings.prefix,
                group=GROUP,
                serve=ServeSettings(host="127.0.0.1", port=0),
                timeout=120,
                request_id="fleet-14",
                report=lambda device, state: reports.__setitem__(device, state),
            )
            outcomes = fleet.wait_terminal("fleet-14", 30)
            return outcomes, reports, fleet, code
    finally:
        broker.stop()


def test_every_device_of_a_50_device_group_ends_active_on_the_new_release(tmp_path):
    outcomes, reports, fleet, code = _push_fleet(tmp_path, rigged=0.0)
    assert code == 0
    assert sorted(reports) == fleet.device_ids
    not_active = {d: o for d, o in outcomes.items() if not (o.active and o.version == "2")}
    assert not not_active, f"{len(not_active)} devices not on v2: {list(not_active.items())[:3]}"
    assert {o.name for o in outcomes.values()} == {MODEL_NAME}


def test_a_release_failing_on_10_percent_is_rolled_back_and_reported_per_device(tmp_path):
    outcomes, reports, fleet, code = _push_fleet(tmp_path, rigged=0.1)
    assert len(fleet.rigged) == SIZE // 10
    assert code == 1  # push says the rollout did not fully succeed
    failed = {d for d, o in outcomes.items() if o.state == "rolled_back"}
    assert failed == fleet.rigged, "exactly the rigged devices roll back"
    for device in fleet.rigged:
        assert outcomes[device].reason == "health_check_failed"
        assert reports[device]["state"] == "rolled_back"  # push saw each failure
        assert reports[device]["request_id"] == "fleet-14"
    healthy = set(fleet.device_ids) - fleet.rigged
    assert all(outcomes[d].active and outcomes[d].version == "2" for d in healthy)
