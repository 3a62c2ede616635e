"""``{prefix}/group/{g}/cmd/status/request``: every device of the group publishes its
status again, live, so an operator can discover a group on a broker that gives retained
messages to no wildcard subscription (RabbitMQ 3.10)."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
import pytest

from edge_agent.publishing.topics import group_status_request
from tests.support.broker import MOSQUITTO, MqttSubscriber, wait_until

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


def test_a_status_request_to_the_group_is_answered_live(
    mqtt_broker_factory, mqtt_publisher_factory
):
    broker = mqtt_broker_factory("mosquitto")
    yard = mqtt_publisher_factory(broker.port, device="y1", groups=("yard",))
    other = mqtt_publisher_factory(broker.port, device="o1", groups=("lobby",))
    for pub in (yard, other):
        assert pub.wait_connected(10)
        pub.publish_status({"state": "running", "groups": list(pub.topics.groups)})
    operator = MqttSubscriber(broker.host, broker.port, ["edge/+/status"]).start()
    try:
        wait_until(lambda: len(operator.on("edge/y1/status")) == 1, 10, "retained status")
        wait_until(lambda: len(operator.on("edge/o1/status")) == 1, 10, "retained status")
        operator.publish(group_status_request("edge", "yard"), b"{}", qos=1, timeout=5)
        answer = operator.wait_for("edge/y1/status", lambda m: not m.retain, timeout=10)
        assert answer.json()["groups"] == ["yard"]
        assert yard.stats()["commands"] == 1
        # Only the group asked answers.
        assert [m.retain for m in operator.on("edge/o1/status")] == [True]
    finally:
        operator.stop()


def test_a_status_request_is_answered_without_retain_status(
    mqtt_broker_factory, mqtt_publisher_factory
):
    broker = mqtt_broker_factory("mosquitto")
    pub = mqtt_publisher_factory(broker.port, device="y1", retain_status=False)
    assert pub.wait_connected(10)
    operator = MqttSubscriber(broker.host, broker.port, ["edge/y1/status"]).start()
    try:
        pub.publish_status({"state": "running", "n": 1})
        operator.wait_for("edge/y1/status")
        operator.publish("edge/y1/cmd/status/request", b"", qos=1, timeout=5)
        wait_until(lambda: len(operator.on("edge/y1/status")) == 2, 10, "the answer")
    finally:
        operator.stop()
    answers = operator.on("edge/y1/status")
    assert [(m.json()["n"], m.retain) for m in answers] == [(1, False), (1, False)]


def test_a_status_request_also_sends_the_model_state_again(
    mqtt_broker_factory, mqtt_publisher_factory
):
    # A rollout resumed on a broker that gives wildcard subscriptions no retained message
    # (RabbitMQ 3.10) learns the devices' update states from these answers.
    broker = mqtt_broker_factory("mosquitto")
    pub = mqtt_publisher_factory(broker.port, device="y1", groups=("yard",))
    assert pub.wait_connected(10)
    pub.publish_status({"state": "running"})
    pub.publish_model({"request_id": "r1", "state": "active"})
    operator = MqttSubscriber(broker.host, broker.port, ["edge/y1/model"]).start()
    try:
        operator.wait_for("edge/y1/model")  # the retained one
        operator.publish(group_status_request("edge", "yard"), b"{}", qos=1, timeout=5)
        answer = operator.wait_for("edge/y1/model", lambda m: not m.retain, timeout=10)
    finally:
        operator.stop()
    assert answer.json() == {"request_id": "r1", "state": "active"}


class _EagerOperator:
    """Sends a status request from its network thread the instant ``online`` arrives."""

    def __init__(self, port: int, device: str):
        self.available = f"edge/{device}/available"
        self.request = f"edge/{device}/cmd/status/request"
        self.answers: list[int] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="eager-operator")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(self.available, 1), (f"edge/{device}/status", 1)])
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == self.available and msg.payload == b"online" and not msg.retain:
            client.publish(self.request, b"", qos=1)
        elif msg.topic != self.available:
            with self._cond:
                self.answers.append(json.loads(msg.payload)["cycle"])
                self._cond.notify_all()

    def wait_answer(self, cycle: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: cycle in self.answers, timeout)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_command_sent_the_instant_online_arrives_is_answered(
    mqtt_broker_factory, mqtt_publisher_factory
):
    """``online`` follows the SUBACK of the command subscriptions: a controller reacting to
    it is heard. Before, ``online`` went out with the SUBSCRIBE and a command could reach
    the broker before the subscription and be dropped; 20 connects give the race room."""
    broker = mqtt_broker_factory("mosquitto")
    operator = _EagerOperator(broker.port, "e1")
    try:
        for cycle in range(20):
            # Not retained: the status is only ever sent as the answer to the request.
            pub = mqtt_publisher_factory(broker.port, device="e1", retain_status=False, start=False)
            pub.publish_status({"cycle": cycle})
            pub.start()
            assert operator.wait_answer(cycle, 10), f"request of connect {cycle} not answered"
            assert pub.stop(5)
    finally:
        operator.stop()
