"""Model states on the retained ``model`` topic: every one delivered, in order."""

from __future__ import annotations

import pytest

from tests.support.broker import MqttSubscriber, wait_until

MODEL = "edge/dev1/model"


def test_a_burst_of_model_states_is_delivered_whole_and_in_order(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory
):
    # Each state can be the one answer to a request (a burst of busy refusals): none may
    # be replaced by the next as a retained latest value is.
    pub = mqtt_publisher_factory(mqtt_broker.port)
    assert pub.wait_connected(10)
    states = [{"state": "failed", "reason": "busy", "request_id": f"req-{i}"} for i in range(40)]
    for state in states:
        pub.publish_model(state)
    got = mqtt_subscriber.wait_count(MODEL, 40, timeout=10)
    assert [m.json() for m in got] == states


@pytest.mark.parametrize("mqtt_broker", ["mosquitto"], indirect=True)
def test_the_latest_model_state_is_retained_again_after_a_broker_restart(
    mqtt_broker, mqtt_publisher_factory
):
    pub = mqtt_publisher_factory(mqtt_broker.port)
    assert pub.wait_connected(10)
    for i in range(5):
        pub.publish_model({"state": "active", "request_id": f"r{i}"})
    wait_until(lambda: pub.stats()["inflight"] == pub.stats()["queued"] == 0, 10, "all sent")
    mqtt_broker.stop()  # no persistence: the broker forgets retained messages
    mqtt_broker.start()
    wait_until(lambda: pub.stats()["reconnects"] == 1 and pub.connected, 10, "reconnect")
    late = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [MODEL]).start()
    try:
        msg = late.wait_for(MODEL, timeout=10)
        assert msg.retain and msg.json() == {"state": "active", "request_id": "r4"}
    finally:
        late.stop()
