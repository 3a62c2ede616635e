"""Home Assistant MQTT discovery: the device and its entities as retained config messages.

Publish every ``(topic, payload)`` of :func:`discovery_messages` retained (QoS 1); the
publisher re-publishes them after each reconnect. Entities read:

* the ``stats`` topic, the daemon's stats JSON: ``fps``, ``latency_ms.invoke.p50``,
  ``backend``, ``model`` and ``dropped_frames`` (see :data:`STATS_FIELDS`; a missing
  value shows as "unknown", not as a template error);
* the retained count topics of the object layer (see
  :mod:`edge_agent.publishing.discovery_objects`), which change only when a count does:
  nothing here updates at frame rate;
* the ``available`` topic (``online``/``offline``) for availability and connectivity.
"""

from __future__ import annotations

import re
from typing import Any

from edge_agent import __version__
from edge_agent.errors import ConfigError
from edge_agent.publishing.discovery_objects import ObjectLayout, object_entities
from edge_agent.publishing.topics import Topics

#: object_id -> dotted path of the value in the stats JSON.
STATS_FIELDS = {
    "fps": "fps",
    "inference_ms": "latency_ms.invoke.p50",
    "backend": "backend",
    "model": "model",
    "dropped_frames": "dropped_frames",
}

#: What a discovery prefix may be: levels of the characters of Home Assistant's ids.
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")

# object_id -> entity settings over the stats topic.
_STATS_SENSORS: dict[str, dict[str, Any]] = {
    "fps": {
        "name": "Frame rate",
        "unit_of_measurement": "fps",
        "state_class": "measurement",
        "suggested_display_precision": 1,
        "icon": "mdi:speedometer",
    },
    "inference_ms": {
        "name": "Inference time",
        "unit_of_measurement": "ms",
        "device_class": "duration",
        "state_class": "measurement",
        "suggested_display_precision": 1,
        "icon": "mdi:timer-outline",
    },
    "backend": {"name": "Backend", "entity_category": "diagnostic", "icon": "mdi:chip"},
    "model": {"name": "Model", "entity_category": "diagnostic", "icon": "mdi:brain"},
    "dropped_frames": {
        "name": "Dropped frames",
        "state_class": "total_increasing",
        "entity_category": "diagnostic",
        "icon": "mdi:image-off-outline",
    },
}

# Text sensors: Home Assistant stores a text sensor's template output as it is, so a
# None would show as the word "None"; the string "unknown" is its unknown state.
_TEXT_FIELDS = frozenset({"backend", "model"})


def value_template(path: str, *, text: bool = False) -> str:
    """A template reading a dotted path of the JSON payload; unknown when absent or null.

    Numeric sensors take ``None`` as unknown; text sensors need the string ``unknown``.
    """
    levels = path.split(".")
    guards = " and ".join(
        f"value_json.{'.'.join(levels[: i + 1])} is defined" for i in range(len(levels))
    )
    if text:
        return (
            f"{{{{ value_json.{path} if {guards} and value_json.{path} is not none "
            "else 'unknown' }}"
        )
    return f"{{{{ value_json.{path} if {guards} else None }}}}"


def node_id(topics: Topics) -> str:
    """The Home Assistant node id of the device (its id with ``.`` made ``_``)."""
    return topics.device_id.replace(".", "_")


def device_info(
    topics: Topics,
    *,
    name: str | None = None,
    model: str = "Coral Edge TPU inference node",
    manufacturer: str = "edge-agent",
    sw_version: str = __version__,
) -> dict[str, Any]:
    """The device-registry block shared by every entity of this device."""
    return {
        "identifiers": [f"edge_agent_{node_id(topics)}"],
        "name": name or topics.device_id,
        "model": model,
        "manufacturer": manufacturer,
        "sw_version": sw_version,
    }


def discovery_messages(
    topics: Topics,
    *,
    discovery_prefix: str = "homeassistant",
    device_name: str | None = None,
    model: str = "Coral Edge TPU inference node",
    manufacturer: str = "edge-agent",
    sw_version: str = __version__,
    stats_interval: float | None = None,
    objects: ObjectLayout | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Discovery config messages for the device's sensors and binary sensors.

    Args:
        topics: the device's topics.
        discovery_prefix: Home Assistant's discovery prefix.
        device_name: name shown in Home Assistant (default: the device id).
        model, manufacturer, sw_version: device-registry fields.
        stats_interval: seconds between stats messages; when given, stats sensors
            expire (become unavailable) after three missed intervals.
        objects: cameras, zones and labels of the per-camera entities (None: none).

    Returns:
        ``(config_topic, payload)`` pairs, to publish retained.

    Raises:
        ConfigError: ``discovery_prefix`` is not a valid topic prefix.
    """
    if not PREFIX_PATTERN.match(discovery_prefix):
        raise ConfigError(
            f"expected levels of [A-Za-z0-9_-] separated by '/', got {discovery_prefix!r}",
            key="mqtt.discovery_prefix",
        )
    node = node_id(topics)
    common = {
        "device": device_info(
            topics, name=device_name, model=model, manufacturer=manufacturer, sw_version=sw_version
        ),
        "origin": {"name": "edge-agent", "sw_version": __version__},
        "has_entity_name": True,
    }
    availability = {
        "availability": [
            {
                "topic": topics.available,
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]
    }

    def config(component: str, object_id: str, fields: dict[str, Any]) -> tuple[str, dict]:
        payload = {"unique_id": f"edge_agent_{node}_{object_id}", **common, **fields}
        return f"{discovery_prefix}/{component}/{node}/{object_id}/config", payload

    messages = []
    for object_id, fields in _STATS_SENSORS.items():
        extra = {"expire_after": max(1, round(3 * stats_interval))} if stats_interval else {}
        messages.append(
            config(
                "sensor",
                object_id,
                {
                    **fields,
                    "state_topic": topics.stats,
                    "value_template": value_template(
                        STATS_FIELDS[object_id], text=object_id in _TEXT_FIELDS
                    ),
                    **availability,
                    **extra,
                },
            )
        )
    if objects is not None:
        messages += object_entities(topics, objects, config, availability)
    # Connectivity reads the availability topic itself and has no availability of its
    # own, so automations see "disconnected" rather than "unavailable".
    messages.append(
        config(
            "binary_sensor",
            "online",
            {
                "name": "Online",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "state_topic": topics.available,
                "payload_on": "online",
                "payload_off": "offline",
            },
        )
    )
    _refuse_collisions(messages)
    return messages


def _refuse_collisions(messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Raise ConfigError when two entities got one config topic: the second would
    silently replace the first in Home Assistant."""
    seen: dict[str, str] = {}
    for topic, payload in messages:
        if topic in seen:
            raise ConfigError(
                f"entities {seen[topic]!r} and {payload['name']!r} both get the Home "
                f"Assistant id {topic!r}: rename a camera, zone or label",
                key="camera.name",
            )
        seen[topic] = payload["name"]
