"""Home Assistant entities per camera: frame rate, detection switch, occupancy and counts.

Every camera gets a frame-rate sensor (from the retained status) and a ``switch`` for
its detection. With events on, per camera and per zone, for every label of
``[events] labels`` and for ``all``:
a ``binary_sensor`` (occupancy: at least one such object now) and a ``sensor`` (how
many). Both read the retained count topics, which change only when a count changes, so
Home Assistant's recorder writes a row per change, never one per frame. With snapshots,
every camera and label also gets an ``image`` entity showing the latest snapshot.

Occupancy and counts are **unavailable while their camera is not streaming** (reconnecting,
ended, starting) **or its detection is switched off**, not "clear" and 0: an automation
must not read a dead camera as an empty room. Their availability is the device's, the
camera's ``state`` in the retained status and its retained switch state
(``availability_mode: all``); the frame rate (0 tells the outage), the switch and the
last snapshot stay available with the device.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from edge_agent.publishing.topics import Topics

Config = Callable[[str, str, dict[str, Any]], tuple[str, dict[str, Any]]]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_OCCUPANCY_TEMPLATE = "{{ 'ON' if value | int(0) > 0 else 'OFF' }}"


class ObjectLayout(NamedTuple):
    """What the object entities are made for."""

    cameras: Sequence[str]
    zones: Sequence[str] = ()
    labels: Sequence[str] = ()  # besides "all"
    events: bool = True  # occupancy and count entities
    snapshots: bool = False  # an image entity per camera and label
    zone_cameras: Mapping[str, str] = MappingProxyType({})  # zone -> its camera


def object_id(*parts: str) -> str:
    """A discovery object id from names that may hold any character."""
    return "_".join(_UNSAFE.sub("_", part) for part in parts)


def name_ids(names: Sequence[str]) -> dict[str, str]:
    """A unique object-id part for each name, stable across restarts.

    A safe name is its own id. Otherwise its ASCII slug (unsafe characters made ``_``)
    is kept when it holds a letter or digit and no other name has the same slug, so
    existing ids do not change; else the slug gets a short hash of the name itself:
    "前门" and "后门" (both ``__``) must not become the same entity.
    """
    slugs = {name: _UNSAFE.sub("_", name) for name in names}
    taken = [slug for slug in slugs.values()]
    ids = {}
    for name, slug in slugs.items():
        if slug == name or (re.search(r"[A-Za-z0-9]", slug) and taken.count(slug) == 1):
            ids[name] = slug
            continue
        digest = hashlib.blake2s(name.encode("utf-8"), digest_size=4).hexdigest()
        stem = slug.strip("_")
        ids[name] = f"{stem}_{digest}" if stem else digest
    return ids


def camera_fps_template(camera: str) -> str:
    """Reads one camera's fps from the status document; None (unknown) if absent."""
    key = _quoted(camera)
    return (
        f"{{{{ value_json.cameras['{key}'].fps if value_json.cameras is defined "
        f"and '{key}' in value_json.cameras else None }}}}"
    )


def _quoted(name: str) -> str:
    """``name`` inside a single-quoted Jinja string."""
    return name.replace("\\", "\\\\").replace("'", "\\'")


def camera_up_template(camera: str) -> str:
    """``online`` while the status says the camera streams, else ``offline``."""
    key = _quoted(camera)
    return (
        f"{{{{ 'online' if value_json.cameras is defined and '{key}' in value_json.cameras "
        f"and value_json.cameras['{key}'].state == 'streaming' else 'offline' }}}}"
    )


def _with_camera(topics: Topics, availability: dict[str, Any], camera: str | None) -> dict:
    """The device's availability, and the camera's streaming state when it is known."""
    if camera is None:
        return availability
    up = {
        "topic": topics.status,
        "value_template": camera_up_template(camera),
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    # Detection switched off: nothing is looked for, so nothing is known either.
    on = {
        "topic": topics.detect_state(camera),
        "payload_available": "ON",
        "payload_not_available": "OFF",
    }
    both = [*availability["availability"], up, on]
    return {"availability": both, "availability_mode": "all"}


def object_entities(
    topics: Topics, layout: ObjectLayout, config: Config, availability: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Discovery messages for the object layer.

    Args:
        topics: the device's topics.
        layout: cameras, zones and labels to make entities for.
        config: ``config(component, object_id, fields)`` -> ``(topic, payload)``.
        availability: the availability block every entity carries.
    """
    ids = name_ids([*layout.cameras, *layout.zones])
    ids.update({f"label:{k}": v for k, v in name_ids([*layout.labels, "all"]).items()})
    messages = []
    for camera in layout.cameras:
        messages.append(
            config(
                "sensor",
                object_id(ids[camera], "fps"),
                {
                    "name": f"{camera} frame rate",
                    "unit_of_measurement": "fps",
                    "state_class": "measurement",
                    "suggested_display_precision": 1,
                    "icon": "mdi:cctv",
                    "state_topic": topics.status,
                    "value_template": camera_fps_template(camera),
                    **availability,
                },
            )
        )
        messages.append(
            config(
                "switch",
                object_id(ids[camera], "detect"),
                {
                    "name": f"{camera} detection",
                    "icon": "mdi:motion-sensor",
                    "command_topic": f"{topics.base}/cmd/{camera}/detect/set",
                    "state_topic": topics.detect_state(camera),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    **availability,
                },
            )
        )
    if not layout.events:
        return messages
    if layout.snapshots:
        for camera in layout.cameras:
            for label in layout.labels:
                messages.append(
                    config(
                        "image",
                        object_id(ids[camera], ids[f"label:{label}"], "snapshot"),
                        {
                            "name": f"{camera} {label} snapshot",
                            "image_topic": topics.snapshot(camera, label),
                            "content_type": "image/jpeg",
                            **availability,
                        },
                    )
                )
    for place in (*layout.cameras, *layout.zones):
        camera = place if place in layout.cameras else layout.zone_cameras.get(place)
        counted = _with_camera(topics, availability, camera)
        for label in (*layout.labels, "all"):
            what = "objects" if label == "all" else label
            topic = topics.count(place, label)
            messages.append(
                config(
                    "binary_sensor",
                    object_id(ids[place], ids[f"label:{label}"], "occupancy"),
                    {
                        "name": f"{place} {what}",
                        "device_class": "occupancy",
                        "state_topic": topic,
                        "value_template": _OCCUPANCY_TEMPLATE,
                        "payload_on": "ON",
                        "payload_off": "OFF",
                        **counted,
                    },
                )
            )
            messages.append(
                config(
                    "sensor",
                    object_id(ids[place], ids[f"label:{label}"], "count"),
                    {
                        "name": f"{place} {what} count",
                        "state_class": "measurement",
                        "icon": "mdi:counter",
                        "state_topic": topic,
                        **counted,
                    },
                )
            )
    return messages
