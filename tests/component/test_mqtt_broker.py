"""The broker fixtures and the embedded amqtt broker, against real paho clients."""

from __future__ import annotations

import socket

import paho.mqtt.client as mqtt
import pytest

from edge_agent.errors import PublishError
from edge_agent.publishing.embedded_broker import EmbeddedBroker
from tests.support.broker import MqttSubscriber, free_port

BOTH = pytest.mark.parametrize("mqtt_broker", ["mosquitto", "amqtt"], indirect=True)


def _client(broker, name: str) -> MqttSubscriber:
    return MqttSubscriber(broker.host, broker.port, (), name=name).start()


@BOTH
def test_retained_message_reaches_a_later_subscriber(mqtt_broker):
    client = _client(mqtt_broker, "retainer")
    try:
        client.publish("t/retained", b"v1", qos=1, retain=True, timeout=5)
        sub = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, ["t/#"]).start()
        try:
            msg = sub.wait_for("t/retained", timeout=5)
            assert (msg.payload, msg.retain) == (b"v1", True)
        finally:
            sub.stop()
    finally:
        client.stop()


@BOTH
def test_restart_on_the_same_port_and_subscriber_follows(mqtt_broker, mqtt_subscriber):
    port = mqtt_broker.port
    mqtt_broker.stop()
    with pytest.raises(OSError):
        socket.create_connection((mqtt_broker.host, port), timeout=1).close()
    mqtt_broker.start()
    assert mqtt_broker.port == port and mqtt_broker.running
    mqtt_subscriber.wait_subscribed(1)  # re-subscribed after the restart
    client = _client(mqtt_broker, "after-restart")
    try:
        client.publish("t/x", b"hello", qos=1, timeout=5)
        assert mqtt_subscriber.wait_for("t/x", timeout=5).payload == b"hello"
    finally:
        client.stop()


@BOTH
def test_broker_sends_the_will_of_a_client_whose_socket_dies(mqtt_broker, mqtt_subscriber):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="doomed")
    client.will_set("t/available", "offline", qos=1, retain=True)
    client.connect(mqtt_broker.host, mqtt_broker.port, keepalive=5)
    client.loop(1.0)
    client.socket().close()  # no DISCONNECT packet: an abrupt death
    msg = mqtt_subscriber.wait_for("t/available", timeout=10)
    assert msg.payload == b"offline"


def test_embedded_broker_picks_a_free_port_and_stops():
    broker = EmbeddedBroker("127.0.0.1", 0)
    broker.start(timeout=10)
    try:
        assert broker.running and broker.port > 0
        socket.create_connection(("127.0.0.1", broker.port), timeout=2).close()
    finally:
        assert broker.stop(timeout=10)
    assert not broker.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()


def test_embedded_broker_reports_a_taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = EmbeddedBroker("127.0.0.1", port)
        with pytest.raises(PublishError, match=f"cannot listen on 127.0.0.1:{port}"):
            broker.start(timeout=10)
        assert not broker.running


def test_embedded_broker_stop_without_start_is_harmless():
    assert EmbeddedBroker("127.0.0.1", free_port()).stop(timeout=1)
