"""Home Assistant discovery payload shapes."""

from __future__ import annotations

import json

import pytest

from edge_agent import __version__
from edge_agent.errors import ConfigError
from edge_agent.publishing.discovery import (
    STATS_FIELDS,
    discovery_messages,
)
from edge_agent.publishing.topics import Topics

TOPICS = Topics("edge", "pi.kitchen")


def _by_topic(**kwargs):
    return dict(discovery_messages(TOPICS, **kwargs))


def test_config_topics():
    assert sorted(_by_topic()) == sorted(
        [f"homeassistant/sensor/pi_kitchen/{f}/config" for f in STATS_FIELDS]
        + [
            "homeassistant/sensor/pi_kitchen/last_detection/config",
            "homeassistant/binary_sensor/pi_kitchen/online/config",
        ]
    )


def test_stats_sensor_shape():
    fps = _by_topic()["homeassistant/sensor/pi_kitchen/fps/config"]
    assert fps["unique_id"] == "edge_agent_pi_kitchen_fps"
    assert fps["state_topic"] == "edge/pi.kitchen/stats"
    assert fps["value_template"] == "{{ value_json.fps if value_json.fps is defined else None }}"
    assert fps["state_class"] == "measurement"
    assert fps["availability"] == [
        {
            "topic": "edge/pi.kitchen/available",
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    ]
    assert fps["device"] == {
        "identifiers": ["edge_agent_pi_kitchen"],
        "name": "pi.kitchen",
        "model": "Coral Edge TPU inference node",
        "manufacturer": "edge-agent",
        "sw_version": __version__,
    }
    assert "expire_after" not in fps
    inference = _by_topic()["homeassistant/sensor/pi_kitchen/inference_ms/config"]
    assert (inference["unit_of_measurement"], inference["device_class"]) == ("ms", "duration")
    assert inference["value_template"] == (
        "{{ value_json.latency_ms.invoke.p50 if value_json.latency_ms is defined and "
        "value_json.latency_ms.invoke is defined and value_json.latency_ms.invoke.p50 "
        "is defined else None }}"
    )
    for field in ("backend", "model", "dropped_frames"):
        cfg = _by_topic()[f"homeassistant/sensor/pi_kitchen/{field}/config"]
        assert cfg["entity_category"] == "diagnostic"
        assert f"value_json.{field} if" in cfg["value_template"]


def test_every_entity_has_unique_id_and_the_same_device():
    messages = discovery_messages(TOPICS, device_name="Kitchen", sw_version="9.9")
    ids = [payload["unique_id"] for _, payload in messages]
    assert len(set(ids)) == len(ids) == 7
    for _, payload in messages:
        assert payload["device"]["identifiers"] == ["edge_agent_pi_kitchen"]
        assert payload["device"]["name"] == "Kitchen"
        assert payload["device"]["sw_version"] == "9.9"
        json.dumps(payload)  # serializable as-is


def test_last_detection_sensor_reads_results():
    cfg = _by_topic()["homeassistant/sensor/pi_kitchen/last_detection/config"]
    assert cfg["state_topic"] == cfg["json_attributes_topic"] == "edge/pi.kitchen/results"
    assert "value_json.results[0].label" in cfg["value_template"]
    assert cfg["availability"][0]["topic"] == "edge/pi.kitchen/available"


def test_connectivity_binary_sensor_has_no_availability():
    cfg = _by_topic()["homeassistant/binary_sensor/pi_kitchen/online/config"]
    assert cfg["device_class"] == "connectivity"
    assert (cfg["state_topic"], cfg["payload_on"], cfg["payload_off"]) == (
        "edge/pi.kitchen/available",
        "online",
        "offline",
    )
    assert "availability" not in cfg


def test_expire_after_is_three_stats_intervals():
    msgs = _by_topic(stats_interval=10)
    assert msgs["homeassistant/sensor/pi_kitchen/fps/config"]["expire_after"] == 30
    assert "expire_after" not in msgs["homeassistant/sensor/pi_kitchen/last_detection/config"]


def test_custom_prefix_and_invalid_prefix():
    assert all(t.startswith("ha/disc/") for t in _by_topic(discovery_prefix="ha/disc"))
    with pytest.raises(ConfigError, match="discovery_prefix"):
        discovery_messages(TOPICS, discovery_prefix="home#assistant")
