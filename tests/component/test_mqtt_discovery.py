"""Home Assistant discovery configs are retained on a real broker."""

from __future__ import annotations

import pytest

from edge_agent.publishing.discovery import discovery_messages
from edge_agent.publishing.topics import Topics
from tests.support.broker import MqttSubscriber


@pytest.mark.parametrize("mqtt_broker", ["mosquitto", "amqtt"], indirect=True)
def test_discovery_configs_are_retained_and_removable(mqtt_broker, mqtt_publisher_factory):
    messages = discovery_messages(Topics("edge", "dev1"), stats_interval=5)
    witness = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, ["homeassistant/#"]).start()
    pub = mqtt_publisher_factory(mqtt_broker.port)
    for topic, payload in messages:
        pub.publish(topic, payload, qos=1, retain=True)
    try:
        for topic, _ in messages:  # the broker has them all
            witness.wait_for(topic)
    finally:
        witness.stop()
    # Home Assistant starting later still discovers the device.
    ha = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, ["homeassistant/#"]).start()
    try:
        for topic, payload in messages:
            msg = ha.wait_for(topic)
            assert msg.retain and msg.json() == payload
        assert {m.topic for m in ha.messages} == {t for t, _ in messages}
        assert len(messages) == 6

        for topic, _ in messages:  # an empty retained config removes the entity
            pub.publish(topic, b"", qos=1, retain=True)
        for topic, _ in messages:
            ha.wait_for(topic, lambda m: m.payload == b"")
    finally:
        ha.stop()
    late = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, ["homeassistant/#", "x/y"]).start()
    try:
        # Nothing retained is left: only a marker published after subscribing arrives.
        pub.publish("x/y", b"marker", qos=1)
        late.wait_for("x/y")
        assert [m.topic for m in late.messages] == ["x/y"]
    finally:
        late.stop()
