"""Oversized packets never reach the device's memory: MQTT 5 Maximum Packet Size, the
device-side read bound for MQTT 3.1.1, the ``auto`` fallback for a 3.1.1-only broker,
and the deploy/ mosquitto snippet that refuses big packets at the broker."""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt
import pytest

from tests.support.broker import HOST, MOSQUITTO, MosquittoBroker, wait_until
from tests.support.paths import REPO

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto")

LIMIT = 64 * 1024
COMMAND = "edge/dev1/cmd/model/update"


def operator(port: int) -> mqtt.Client:
    """A connected operator client (publishes commands)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator")
    client.connect(HOST, port, 30)
    client.loop_start()
    return client


def commands_of(factory, port: int, **settings):
    """A started publisher whose received command payload sizes end up in the list."""
    got: list[int] = []
    lock = threading.Lock()

    def on_command(name, payload, topic):
        with lock:
            got.append(len(payload))

    pub = factory(port, on_command=on_command, max_packet_size=LIMIT, **settings)
    assert pub.wait_connected(10)
    return pub, got


def send(client: mqtt.Client, size: int) -> None:
    """Publish a command payload of ``size`` bytes and wait until the broker has it."""
    client.publish(COMMAND, b"x" * size, qos=1).wait_for_publish(10)


@pytest.mark.parametrize("mqtt_broker", ["mosquitto"], indirect=True)
def test_mqtt5_broker_never_sends_a_packet_over_the_declared_size(
    mqtt_broker, mqtt_publisher_factory
):
    pub, got = commands_of(mqtt_publisher_factory, mqtt_broker.port, protocol="5")
    op = operator(mqtt_broker.port)
    try:
        send(op, 4 * LIMIT)
        send(op, 100)
        wait_until(lambda: got == [100], 10, "the small command")
    finally:
        op.loop_stop()
    assert pub.stats()["reconnects"] == 0  # the broker dropped it; the link never broke


@pytest.mark.parametrize("mqtt_broker", ["mosquitto"], indirect=True)
def test_mqtt311_device_discards_an_oversized_packet_after_its_header(
    mqtt_broker, mqtt_publisher_factory, caplog
):
    pub, got = commands_of(mqtt_publisher_factory, mqtt_broker.port, protocol="3.1.1")
    op = operator(mqtt_broker.port)
    try:
        with caplog.at_level(logging.WARNING):
            send(op, 4 * LIMIT)
            send(op, 100)
            wait_until(lambda: 100 in got, 10, "the small command")
    finally:
        op.loop_stop()
    assert 4 * LIMIT not in got
    assert pub.stats()["reconnects"] == 0  # read and thrown away: the session goes on
    assert pub.stats()["oversized"] == 1
    assert f"on {COMMAND}: exceeds mqtt.max_packet_size ({LIMIT})" in caplog.text


@pytest.mark.parametrize("mqtt_broker", ["mosquitto"], indirect=True)
def test_mqtt311_an_oversized_retained_command_does_not_loop_the_connection(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory
):
    junk = "edge/dev1/cmd/junk"
    op = operator(mqtt_broker.port)
    try:  # sent again by the broker on every subscribe, as long as it is retained
        op.publish(junk, b"x" * (4 * LIMIT), qos=1, retain=True).wait_for_publish(10)
    finally:
        op.loop_stop()
    pub, _ = commands_of(mqtt_publisher_factory, mqtt_broker.port, protocol="3.1.1")
    wait_until(lambda: pub.stats()["oversized"] == 1, 10, "the retained packet discarded")
    for seq in range(20):
        pub.publish_result({"seq": seq})
    got = mqtt_subscriber.wait_count("edge/dev1/results", 20)
    assert [m.json()["seq"] for m in got] == list(range(20))  # once each, in order
    wait_until(lambda: pub.stats()["published"] == 20, 10, "20 PUBACKs")
    assert pub.stats()["reconnects"] == 0
    assert f"empty retained message to {junk}" in pub.error


@pytest.mark.parametrize("mqtt_broker", ["amqtt"], indirect=True)
def test_auto_falls_back_to_mqtt311_for_a_broker_without_mqtt5(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory, caplog
):
    with caplog.at_level(logging.WARNING):
        pub = mqtt_publisher_factory(mqtt_broker.port, protocol="auto")
        assert pub.wait_connected(15)
        pub.publish_result({"seq": 1})
        mqtt_subscriber.wait_count("edge/dev1/results", 1)
    assert "speaks MQTT 3.1.1 only" in caplog.text


def test_deploy_snippet_makes_mosquitto_refuse_big_packets(tmp_path):
    broker = MosquittoBroker(tmp_path)
    snippet = REPO / "deploy" / "mosquitto" / "edge-agent-limits.conf"
    with broker.config.open("a") as conf:
        conf.write(snippet.read_text())
    broker.start()
    try:
        op = operator(broker.port)
        lost = threading.Event()
        op.on_disconnect = lambda *args: lost.set()
        op.publish(COMMAND, b"x" * (2 << 20), qos=1)
        assert lost.wait(10), "mosquitto accepted a 2 MiB packet"
        op.loop_stop()
    finally:
        broker.stop()
