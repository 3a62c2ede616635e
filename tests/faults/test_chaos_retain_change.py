"""A broker reconfigured to keep retained messages while the device is connected to it
unretained (its will included): what a later subscriber reads of the device's
availability must not outlive the device."""

from __future__ import annotations

import socket

import pytest

from tests.support.broker import MOSQUITTO, MosquittoBroker, MqttSubscriber, wait_until

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto")

AVAILABLE = "edge/dev1/available"
STATE = "edge/dev1/cam0/mode"


def _retained(broker: MosquittoBroker, topic: str) -> list[bytes]:
    """What a subscriber that comes now reads retained on ``topic`` (retained messages
    arrive before a message published after the SUBACK)."""
    late = MqttSubscriber(broker.host, broker.port, [topic, "marker"], name="late").start()
    try:
        late.publish("marker", b"", 1)
        wait_until(lambda: late.on("marker"), 10, "the marker")
    finally:
        late.stop()
    return [m.payload for m in late.on(topic) if m.retain]


def test_online_is_not_left_retained_by_a_connection_whose_will_is_unretained(
    tmp_path, mqtt_publisher_factory
):
    broker = MosquittoBroker(tmp_path / "broker")
    allowing = broker.config.read_text()
    broker.config.write_text(allowing + "retain_available false\n")
    broker.start()
    try:
        # No reconnect within 3 s of the device's death below (delays are 3..6 s).
        pub = mqtt_publisher_factory(broker.port, protocol="5", reconnect_min=6, reconnect_max=6)
        assert pub.wait_connected(10)
        assert pub.stats()["retain_available"] is False
        broker.stop()
        broker.config.write_text(allowing)  # the admin allows retained messages again
        broker.start()
        watch = MqttSubscriber(broker.host, broker.port, [AVAILABLE]).start()
        # The connection after the restart still has the unretained will it learned.
        wait_until(lambda: watch.on(AVAILABLE), 40, "online after the restart")
        assert pub.stats()["retain_available"] is True
        pub._conn.client.socket().shutdown(socket.SHUT_RDWR)  # the device dies: no DISCONNECT
        wait_until(lambda: len(watch.on(AVAILABLE)) >= 2, 10, "the will")
        watch.stop()
        late = _retained(broker, AVAILABLE)
    finally:
        broker.kill()
    assert [m.payload for m in watch.on(AVAILABLE)] == [b"online", b"offline"]
    assert late != [b"online"], "a dead device stays online for every later subscriber"


def test_on_home_assistants_birth_the_configs_go_before_the_states(
    tmp_path, mqtt_publisher_factory
):
    """A broker without retained messages: Home Assistant subscribes an entity's state
    topic when it reads its config; a state sent before it is lost until it changes."""
    broker = MosquittoBroker(tmp_path / "broker")
    broker.config.write_text(broker.config.read_text() + "retain_available false\n")
    broker.start()
    config, state = "homeassistant/sensor/dev1_cam0_person/config", "edge/dev1/cam0/person/count"
    try:
        early = MqttSubscriber(broker.host, broker.port, ["#"]).start()
        pub = mqtt_publisher_factory(broker.port, protocol="5")
        assert pub.wait_connected(10)
        pub.publish(state, b"2", 1, True)
        pub.publish(config, b"{}", 1, True)
        wait_until(lambda: early.on(config) and early.on(state), 10, "both, before the birth")
        early.stop()
        ha = MqttSubscriber(broker.host, broker.port, ["#"], name="ha").start()
        # HaDiscovery._republish: every config again, then republish_latest().
        pub.publish(config, b"{}", 1, True)
        pub.republish_latest()
        wait_until(lambda: ha.on(config) and ha.on(state), 10, "the config and the state")
        ha.stop()
    finally:
        broker.kill()
    topics = [m.topic for m in ha.messages if m.topic in (config, state)]
    assert topics.index(config) < topics.index(state), topics


def test_of_two_brokers_only_the_one_without_retained_messages_gets_them_unretained(
    tmp_path, mqtt_publisher_factory
):
    plain = MosquittoBroker(tmp_path / "plain")
    bare = MosquittoBroker(tmp_path / "bare")
    bare.config.write_text(bare.config.read_text() + "retain_available false\n")
    bare.start()
    plain.start()
    try:
        hosts = (f"{bare.host}:{bare.port}", f"{plain.host}:{plain.port}")
        pub = mqtt_publisher_factory(1883, hosts=hosts, protocol="auto")
        assert pub.wait_connected(10)
        assert pub.stats()["retain_available"] is False
        pub.publish(STATE, b"auto", 1, True)
        bare.kill()  # fails over to the broker that keeps retained messages
        wait_until(lambda: pub.connected and pub.broker.endswith(str(plain.port)), 20, "plain")
        wait_until(lambda: _retained(plain, STATE) == [b"auto"], 10, "the value retained")
        assert _retained(plain, AVAILABLE) == [b"online"]
        assert pub.stats()["retain_available"] is True
        plain.kill()
        bare.start()  # back: unretained again, connected at once
        wait_until(lambda: pub.connected and pub.broker.endswith(str(bare.port)), 20, "bare")
        assert pub.stats()["retain_available"] is False
    finally:
        bare.kill()
        plain.kill()
