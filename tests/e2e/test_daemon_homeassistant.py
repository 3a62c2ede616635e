"""Tier 3: the daemon as Home Assistant sees it, through a real broker.

Home Assistant publishes ``online`` on ``homeassistant/status`` when it starts; after a
power cut it boots with the boxes, so its birth may reach a daemon that is still loading
its model. That message is Home Assistant's, not a model command.
"""

from __future__ import annotations

import os

import pytest

from tests.support.broker import MOSQUITTO, MosquittoBroker, wait_until
from tests.support.clips import write_clip
from tests.support.ha_render import available
from tests.support.mqtt_client import MqttSubscriber
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


def test_counts_are_unavailable_while_the_camera_is_down_or_not_detecting(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    # A dead camera's occupancy must not read "clear" to an automation: Home Assistant
    # shows its occupancy and counts unavailable until it streams again.
    clip = write_clip(tmp_path / "short.avi", 15, fps=15.0)  # 1 s, looped
    away = tmp_path / "elsewhere.avi"
    daemon = edge_daemon(mqtt_broker.port, clip, DEMO / "color_blobs.tflite", DEMO / "labels.txt")
    sub, topics = mqtt_subscriber, daemon.topics
    occupancy = sub.wait_for("homeassistant/binary_sensor/e2e-dev/cam0_all_occupancy/config")
    fps = sub.wait_for("homeassistant/sensor/e2e-dev/cam0_fps/config").json()
    occupancy = occupancy.json()

    def shown(config) -> bool:
        needed = (topics.available, topics.status, topics.detect_state("cam0"))
        if not all(sub.on(topic) for topic in needed):
            return False
        return available(config, {t: sub.on(t)[-1].payload.decode() for t in needed})

    wait_until(lambda: shown(occupancy), 20, "occupancy available while streaming")
    os.rename(clip, away)
    wait_until(lambda: not shown(occupancy), 10, "occupancy unavailable without a camera")
    assert shown(fps)  # the frame rate stays, and reads the outage itself
    assert daemon.alive()
    os.rename(away, clip)
    wait_until(lambda: shown(occupancy), 10, "occupancy available again")
    # Detection switched off: nothing is looked for, so nothing is known either.
    command = f"{topics.base}/cmd/cam0/detect/set"
    sub.publish(command, b"OFF", qos=1)
    wait_until(lambda: not shown(occupancy), 10, "occupancy unavailable with detection off")
    assert shown(fps)
    sub.publish(command, b"ON", qos=1)
    wait_until(lambda: shown(occupancy), 10, "occupancy available with detection on")
    assert daemon.stop(timeout=10) == 0


@pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto")
def test_home_assistant_started_later_sees_the_device_on_a_broker_without_retained_messages(
    tmp_path, edge_daemon
):
    # mosquitto's retain_available false refuses a CONNECT with a retained will and drops
    # a client that publishes a retained message: the daemon goes unretained there, and
    # Home Assistant, which comes after it, gets configs, availability and states on its
    # birth instead of from the broker.
    broker = MosquittoBroker(tmp_path / "broker")
    with broker.config.open("a") as conf:
        conf.write("retain_available false\n")
    broker.start()
    early = MqttSubscriber(broker.host, broker.port, ["#"]).start()
    ha = MqttSubscriber(broker.host, broker.port, ["#"], name="ha")
    try:
        daemon = edge_daemon(
            broker.port, DEMO / "clip.avi", DEMO / "color_blobs.tflite", DEMO / "labels.txt"
        )
        topics = daemon.topics
        config = "homeassistant/binary_sensor/e2e-dev/cam0_all_occupancy/config"
        early.wait_for(config, timeout=20)
        early.wait_for(topics.detect_state("cam0"), timeout=10)
        ha.start()
        ha.publish("homeassistant/status", b"online", qos=1)
        occupancy = ha.wait_for(config, timeout=20).json()
        needed = (topics.available, topics.status, topics.detect_state("cam0"))

        def shown() -> bool:
            if not all(ha.on(topic) for topic in needed):
                return False
            return available(occupancy, {t: ha.on(t)[-1].payload.decode() for t in needed})

        wait_until(shown, 15, "occupancy available to a Home Assistant that came later")
        assert daemon.alive()
        assert "keeps no retained messages" in daemon.log(), daemon.log_tail()
        assert not any(m.retain for m in list(early.messages)), "a retained message got through"
    finally:
        ha.stop()
        early.stop()
        broker.kill()
