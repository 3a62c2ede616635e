"""Probing after short-lived connections (MQTT 3.1.1) against a broker restarted again
and again: no good message may be taken for one the broker ends the connection for."""

from __future__ import annotations

import pytest

from tests.support.broker import MOSQUITTO, MosquittoBroker, MqttSubscriber, wait_until

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto")

STATE = "edge/dev1/cam0/mode"


def test_a_retained_qos0_value_survives_a_broker_restarted_four_times(
    tmp_path, mqtt_publisher_factory
):
    """Each restart ends a connection seconds after its CONNACK (the next one probes);
    the QoS 0 value sent at every CONNACK was long read by the broker each time."""
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    try:
        pub = mqtt_publisher_factory(broker.port, protocol="3.1.1")
        assert pub.wait_connected(10)
        pub.publish(STATE, b"auto", 0, True)
        for n in range(1, 5):
            sub = MqttSubscriber(broker.host, broker.port, [STATE]).start()
            wait_until(lambda sub=sub: sub.on(STATE), 10, f"the value before restart {n}")
            sub.stop()
            broker.stop()
            wait_until(lambda: not pub.connected, 10, "the loss")
            broker.start()
            wait_until(lambda: pub.connected, 10, f"reconnected after restart {n}")
        late = MqttSubscriber(broker.host, broker.port, [STATE]).start()
        try:
            wait_until(lambda: late.on(STATE), 10, "the value after the last restart")
        finally:
            late.stop()
    finally:
        broker.kill()
    assert pub.stats()["refused"] == 0


@pytest.mark.parametrize("qos", [0, 1])
def test_results_replaying_from_the_spool_survive_a_broker_killed_after_every_connect(
    tmp_path, mqtt_publisher_factory, qos
):
    """A broker that crashes right after each connect (a crash loop) while the spool
    replays: whatever is in flight at each crash is a good result."""
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    pub = mqtt_publisher_factory(broker.port, protocol="3.1.1", qos_results=qos)
    try:
        assert pub.wait_connected(10)
        broker.kill()
        wait_until(lambda: not pub.connected, 10, "the loss")
        for seq in range(300):
            pub.publish_result({"seq": seq, "pad": "p" * 200})
        wait_until(lambda: pub.stats()["spool_pending"] == 300, 10, "spooled")
        for n in range(6):
            broker.start()
            wait_until(lambda: pub.stats()["replayed"] > 0 or pub.connected, 10, f"connect {n}")
            broker.kill()
            wait_until(lambda: not pub.connected, 10, f"loss {n}")
        broker.start()
        wait_until(lambda: pub.stats()["spool_pending"] == 0, 30, "the spool replayed")
    finally:
        broker.kill()
    stats = pub.stats()
    assert (stats["refused"], stats["replayed"]) == (0, 300), stats


def test_a_retained_qos1_value_survives_a_broker_killed_right_after_every_connect(
    tmp_path, mqtt_publisher_factory
):
    """Re-sent first at every CONNACK, a retained value is often the one in flight when a
    crash-looping broker dies: it is a good message all the same."""
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    pub = mqtt_publisher_factory(broker.port, protocol="3.1.1")
    try:
        assert pub.wait_connected(10)
        pub.publish(STATE, b"x" * 1000, 1, True)
        for n in range(8):
            wait_until(lambda: pub.connected, 10, f"connect {n}")
            broker.kill()
            wait_until(lambda: not pub.connected, 10, f"loss {n}")
            broker.start()
        late = MqttSubscriber(broker.host, broker.port, [STATE]).start()
        try:
            wait_until(lambda: late.on(STATE), 10, "the value after the last restart")
        finally:
            late.stop()
    finally:
        broker.kill()
    assert pub.stats()["refused"] == 0
