"""Tier 3: the daemon as Home Assistant sees it, through a real broker.

Home Assistant publishes ``online`` on ``homeassistant/status`` when it starts; after a
power cut it boots with the boxes, so its birth may reach a daemon that is still loading
its model. That message is Home Assistant's, not a model command.
"""

from __future__ import annotations

import pytest

from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

DEMO = REPO / "models" / "demo"


def test_home_assistant_birth_during_startup_is_not_a_model_command(
    mqtt_broker, mqtt_subscriber, edge_daemon
):
    daemon = edge_daemon(
        mqtt_broker.port, DEMO / "clip.avi", DEMO / "color_blobs.tflite", DEMO / "labels.txt"
    )
    topics = daemon.topics
    # "online" means the commands are listened to; the model is still loading.
    mqtt_subscriber.wait_for(topics.available, lambda m: m.payload == b"online", timeout=20)
    mqtt_subscriber.publish("homeassistant/status", b"online", qos=1)
    # The discovery configs go out once the daemon has started.
    config = "homeassistant/binary_sensor/e2e-dev/online/config"
    mqtt_subscriber.wait_for(config, timeout=20)
    # Ask for the latest model state again, and read the answer.
    seen = len(mqtt_subscriber.on(topics.model))
    mqtt_subscriber.publish(f"{topics.base}/cmd/status/request", b"", qos=1)
    mqtt_subscriber.wait_count(topics.model, seen + 1, timeout=10)
    states = [m.json() for m in mqtt_subscriber.on(topics.model)]
    refused = [s for s in states if s.get("reason") == "bad_command"]
    assert not refused, f"Home Assistant's birth was taken as a model command: {refused}"
    assert states[-1]["state"] == "active", states[-1]
    assert "unknown command" not in daemon.log(), daemon.log_tail()
