"""``mqtt.hosts`` against two real mosquittos: the publisher and the operator's client
fail over to the next broker, and the spool loses nothing across the switch."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from edge_agent.config import parse_config
from edge_agent.errors import PublishError
from edge_agent.publishing.settings import MqttSettings, base_client, connect_failover
from edge_agent.tools.doctor.report import FAIL, OK, WARN, Doctor, Report
from tests.support.broker import MOSQUITTO, MqttSubscriber, free_port, wait_until

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

RESULTS = "edge/dev1/results"
STATUS = "edge/dev1/status"


def _seqs(sub: MqttSubscriber) -> list[int]:
    """First arrivals, in order (a re-sent in-flight message may arrive twice)."""
    return list(dict.fromkeys(m.json()["seq"] for m in sub.on(RESULTS)))


def _addr(broker) -> str:
    return f"{broker.host}:{broker.port}"


def test_publisher_fails_over_and_back_without_losing_a_result(
    mqtt_broker_factory, mqtt_publisher_factory
):
    first, second = mqtt_broker_factory("mosquitto"), mqtt_broker_factory("mosquitto")
    on_first = MqttSubscriber(first.host, first.port, [RESULTS]).start()
    on_second = MqttSubscriber(second.host, second.port, [RESULTS, STATUS]).start()
    pub = mqtt_publisher_factory(1883, hosts=(_addr(first), _addr(second)))
    try:
        assert pub.wait_connected(10) and pub.broker == _addr(first)
        for i in range(100):
            pub.publish_result({"seq": i})
        wait_until(lambda: len(_seqs(on_first)) >= 50, 10, "results on the first broker")
        first.kill()  # a crash: no clean goodbye, in-flight results unacknowledged
        killed = time.monotonic()
        for i in range(100, 300):
            pub.publish_result({"seq": i})
        wait_until(lambda: pub.broker == _addr(second), 15, "failover to the second broker")
        moved = time.monotonic() - killed
        wait_until(lambda: 299 in _seqs(on_second), 15, "every result on the second broker")
        print(
            f"FIGURE mosquitto failover: connected to the second {moved:.2f}s after the kill, "
            f"every result there {time.monotonic() - killed:.2f}s after; "
            f"replayed {pub.stats()['replayed']}"
        )
        got_first, got_second = _seqs(on_first), _seqs(on_second)
        # Nothing the device was not told was safe is lost: what the first did not
        # acknowledge was replayed to the second, in order, so the second sees one
        # contiguous run up to the newest result.
        assert got_second == list(range(got_second[0], 300))
        # The only results either subscriber may miss are ones the first broker
        # acknowledged and then lost by being SIGKILLed before forwarding them (a
        # non-persistent broker's loss, not the device's): a short run between the last
        # one the first delivered and the first one replayed, never a hole elsewhere.
        missing = set(range(300)) - set(got_first) - set(got_second)
        if missing:
            assert missing == set(range(max(got_first) + 1, got_second[0])), sorted(missing)
            # Only results published before the kill can have been acknowledged by the
            # first broker (how many it held unforwarded depends on the machine's load).
            assert max(missing) < 100, sorted(missing)
        assert got_second[0] <= max(got_first) + 1 + len(missing)
        stats = pub.stats()
        assert stats["reconnects"] == 1 and stats["broker"] == _addr(second)

        # The first comes back: the device stays where it is (no duplicates, no gap) ...
        first.start()
        on_first.stop()
        on_first = MqttSubscriber(first.host, first.port, [RESULTS]).start()
        for i in range(300, 400):
            pub.publish_result({"seq": i})
        wait_until(lambda: 399 in _seqs(on_second), 10, "results after the first's return")
        assert _seqs(on_second) == list(range(got_second[0], 400))
        assert on_first.on(RESULTS) == []
        # ... and when the second dies, it goes back to the first, again losing nothing.
        second.kill()
        for i in range(400, 500):
            pub.publish_result({"seq": i})
        wait_until(lambda: 499 in _seqs(on_first), 15, "results back on the first broker")
        union = set(_seqs(on_second)) | set(_seqs(on_first))
        assert union >= set(range(got_second[0], 500))
        assert _seqs(on_first) == list(range(_seqs(on_first)[0], 500))
        assert pub.broker == _addr(first)
    finally:
        on_first.stop()
        on_second.stop()


def test_retained_status_names_the_broker_and_is_rewritten_on_the_new_one(
    mqtt_broker_factory, mqtt_publisher_factory
):
    first, second = mqtt_broker_factory("mosquitto"), mqtt_broker_factory("mosquitto")
    changes: list[bool] = []
    pub = mqtt_publisher_factory(
        1883, hosts=(_addr(first), _addr(second)), on_connection_change=changes.append
    )
    assert pub.wait_connected(10)
    pub.publish_status({"state": "running", "broker": pub.broker})
    first.kill()
    wait_until(lambda: pub.broker == _addr(second), 15, "failover")
    # A late subscriber on the second broker still finds the retained state there.
    late = MqttSubscriber(second.host, second.port, ["edge/dev1/#"]).start()
    try:
        wait_until(lambda: late.on(STATUS), 10, "retained status on the second broker")
        assert late.on("edge/dev1/available")[-1].payload == b"online"
        assert changes == [True, False, True]
    finally:
        late.stop()


def test_first_broker_down_at_start_connects_to_the_next(
    mqtt_broker_factory, mqtt_publisher_factory
):
    second = mqtt_broker_factory("mosquitto")
    dead = f"127.0.0.1:{free_port()}"
    pub = mqtt_publisher_factory(
        1883, hosts=(dead, _addr(second)), reconnect_min=5, reconnect_max=5
    )
    # reconnect_min is 5 s: only moving on at once (not backing off) connects in time.
    assert pub.wait_connected(3)
    assert pub.broker == _addr(second) and pub.stats()["connect_failures"] == 1


def test_operator_client_takes_the_first_broker_that_answers_and_fails_over(
    mqtt_broker_factory,
):
    first, second = mqtt_broker_factory("mosquitto"), mqtt_broker_factory("mosquitto")
    dead = f"127.0.0.1:{free_port()}"
    settings = MqttSettings(hosts=(dead, _addr(first), _addr(second)))
    connected = threading.Event()
    where: list[str] = []
    client = base_client(settings, "operator-test", None, reconnect=True)
    client.reconnect_delay_set(0.05, 0.2)

    def on_connect(c, _u, _f, rc, _p):
        where.append(f"{c.host}:{c.port}")
        connected.set()

    client.on_connect = on_connect
    assert str(connect_failover(client, settings)) == _addr(first)
    client.loop_start()
    try:
        assert connected.wait(10) and where == [_addr(first)]
        connected.clear()
        first.kill()
        assert connected.wait(15), "no reconnect to the next broker"
        assert where[-1] == _addr(second)
        info = client.publish("edge/ops", json.dumps({"ok": 1}), qos=1)
        info.wait_for_publish(5)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
    finally:
        client.disconnect()
        client.loop_stop()


def test_operator_client_names_every_broker_when_none_answers():
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    settings = MqttSettings(hosts=tuple(dead))
    client = base_client(settings, "operator-test", None, reconnect=True)
    with pytest.raises(PublishError) as info:
        connect_failover(client, settings)
    assert all(d in str(info.value) for d in dead)


def test_doctor_probes_every_broker_and_warns_for_a_dead_standby(tmp_path, mqtt_broker_factory):
    live = mqtt_broker_factory("mosquitto")
    dead = f"127.0.0.1:{free_port()}"
    doctor = Doctor(str(tmp_path / "unused.toml"), timeout=2.0)

    def probe(hosts):
        doctor.report = Report()
        text = f"[mqtt]\nhosts = {json.dumps(hosts)}\n[device]\nstate_dir = '{tmp_path}'\n"
        doctor.broker(parse_config(text, "config.toml", env={}))
        return [(c.status, c.detail.split(" ")[0]) for c in doctor.report.checks]

    assert probe([dead, _addr(live)]) == [(WARN, f"{dead}:"), (OK, f"{_addr(live)}:")]
    assert probe([dead]) == [(FAIL, f"{dead}:")]
