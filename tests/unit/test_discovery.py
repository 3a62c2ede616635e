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
from edge_agent.publishing.discovery_objects import ObjectLayout, name_ids
from edge_agent.publishing.topics import Topics
from tests.support.ha_render import available, render

TOPICS = Topics("edge", "pi.kitchen")


def _by_topic(**kwargs):
    return dict(discovery_messages(TOPICS, **kwargs))


def test_config_topics():
    assert sorted(_by_topic()) == sorted(
        [f"homeassistant/sensor/pi_kitchen/{f}/config" for f in STATS_FIELDS]
        + ["homeassistant/binary_sensor/pi_kitchen/online/config"]
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
    # A text sensor keeps a template's output as text: a missing value must read
    # "unknown" (Home Assistant's unknown state), never the word "None".
    for field in ("backend", "model"):
        template = _by_topic()[f"homeassistant/sensor/pi_kitchen/{field}/config"]
        assert template["value_template"] == (
            f"{{{{ value_json.{field} if value_json.{field} is defined and "
            f"value_json.{field} is not none else 'unknown' }}}}"
        )


def test_every_entity_has_unique_id_and_the_same_device():
    messages = discovery_messages(TOPICS, device_name="Kitchen", sw_version="9.9")
    ids = [payload["unique_id"] for _, payload in messages]
    assert len(set(ids)) == len(ids) == 6
    for _, payload in messages:
        assert payload["device"]["identifiers"] == ["edge_agent_pi_kitchen"]
        assert payload["device"]["name"] == "Kitchen"
        assert payload["device"]["sw_version"] == "9.9"
        json.dumps(payload)  # serializable as-is


def test_object_entities_per_camera_zone_and_label():
    layout = ObjectLayout(["front", "back yard"], ["porch"], ["person", "car"])
    msgs = _by_topic(objects=layout)
    ids = [p["unique_id"] for p in msgs.values()]
    # stats + online, fps and detect switch per camera, places x (labels + all) x 2
    assert len(ids) == len(set(ids)) == 6 + 2 * 2 + 3 * 3 * 2
    switch = msgs["homeassistant/switch/pi_kitchen/back_yard_detect/config"]
    assert switch["command_topic"] == "edge/pi.kitchen/cmd/back yard/detect/set"
    assert switch["state_topic"] == "edge/pi.kitchen/back yard/detect/state"
    with_images = _by_topic(objects=layout._replace(snapshots=True))
    image = with_images["homeassistant/image/pi_kitchen/front_person_snapshot/config"]
    assert image["image_topic"] == "edge/pi.kitchen/front/person/snapshot"
    assert image["content_type"] == "image/jpeg"
    assert len(with_images) == len(msgs) + 2 * 2  # cameras x labels
    off = _by_topic(objects=layout._replace(events=False))
    assert len(off) == 6 + 2 * 2  # no occupancy or counts without events
    occupancy = msgs["homeassistant/binary_sensor/pi_kitchen/porch_person_occupancy/config"]
    assert occupancy["state_topic"] == "edge/pi.kitchen/porch/person"
    assert occupancy["device_class"] == "occupancy"
    assert occupancy["value_template"] == "{{ 'ON' if value | int(0) > 0 else 'OFF' }}"
    count = msgs["homeassistant/sensor/pi_kitchen/back_yard_all_count/config"]
    assert count["state_topic"] == "edge/pi.kitchen/back yard/all"
    assert count["name"] == "back yard objects count" and count["state_class"] == "measurement"
    fps = msgs["homeassistant/sensor/pi_kitchen/back_yard_fps/config"]
    assert fps["state_topic"] == "edge/pi.kitchen/status"
    assert "value_json.cameras['back yard'].fps" in fps["value_template"]
    # Nothing reads the per-frame results topic any more.
    assert all(p.get("state_topic") != TOPICS.results for p in msgs.values())
    assert all(p.get("json_attributes_topic") is None for p in msgs.values())


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
    assert "expire_after" not in msgs["homeassistant/binary_sensor/pi_kitchen/online/config"]


def test_custom_prefix_and_invalid_prefix():
    assert all(t.startswith("ha/disc/") for t in _by_topic(discovery_prefix="ha/disc"))
    with pytest.raises(ConfigError, match="discovery_prefix"):
        discovery_messages(TOPICS, discovery_prefix="home#assistant")


def test_templates_render_values_and_unknown_for_missing_ones():
    msgs = _by_topic(objects=ObjectLayout(["front"], ["porch"], ["person"]))

    def template(component, object_id):
        return msgs[f"homeassistant/{component}/pi_kitchen/{object_id}/config"]["value_template"]

    full = json.dumps(
        {
            "fps": 14.8,
            "backend": "cpu",
            "model": "blobs",
            "latency_ms": {"invoke": {"p50": 0.57}},
            "dropped_frames": 3,
        }
    )
    assert render(template("sensor", "fps"), full) == "14.8"
    assert render(template("sensor", "inference_ms"), full) == "0.57"
    assert render(template("sensor", "backend"), full) == "cpu"
    empty = json.dumps({"backend": None})
    assert render(template("sensor", "backend"), empty) == "unknown"
    assert render(template("sensor", "model"), empty) == "unknown"
    assert render(template("sensor", "inference_ms"), empty) == "None"  # numeric: unknown
    status = json.dumps({"cameras": {"front": {"fps": 9.5}}})
    assert render(template("sensor", "front_fps"), status) == "9.5"
    assert render(template("sensor", "front_fps"), json.dumps({"cameras": {}})) == "None"
    occupancy = template("binary_sensor", "porch_person_occupancy")
    assert [render(occupancy, v) for v in ("0", "2", "")] == ["OFF", "ON", "OFF"]


def test_cameras_differing_only_in_non_ascii_characters_get_distinct_ids():
    layout = ObjectLayout(["前门", "后门"], labels=["person"])
    messages = discovery_messages(TOPICS, objects=layout)
    topics = [t for t, _ in messages]
    uids = [p["unique_id"] for _, p in messages]
    assert len(set(topics)) == len(topics) == len(messages)
    assert len(set(uids)) == len(uids)
    # Stable: the same names give the same ids, whatever the other cameras are.
    again = dict(discovery_messages(TOPICS, objects=ObjectLayout(["前门"], labels=["person"])))
    front = [t for t, p in messages if p["name"] == "前门 detection"]
    assert front and front[0] in again


def test_safe_and_unique_slugs_keep_their_ids():
    ids = name_ids(["door", "front door", "café", "a b", "a.b", "前门", "x_y", "x y"])
    assert ids["door"] == "door"
    assert ids["front door"] == "front_door"  # unchanged from earlier versions
    assert ids["café"] == "caf_"
    assert ids["x_y"] == "x_y"
    # Same slug: the lossy names get a hash of the name; no slug: the hash alone.
    assert ids["x y"].startswith("x_y_") and ids["x y"] != ids["x_y"]
    assert ids["a b"] != ids["a.b"] and ids["a b"].startswith("a_b_")
    assert ids["前门"] == name_ids(["前门"])["前门"] and "_" not in ids["前门"]
    assert len(set(ids.values())) == len(ids)


def test_entities_still_sharing_an_id_are_a_config_error():
    # A camera and a zone of one name make the same count entities.
    layout = ObjectLayout(["door"], zones=["door"], labels=["person"])
    with pytest.raises(ConfigError, match=r"camera\.name.*both get the Home Assistant id"):
        discovery_messages(TOPICS, objects=layout)


def test_occupancy_and_counts_are_unavailable_while_their_camera_does_not_stream_or_detect():
    layout = ObjectLayout(
        ["front", "it's"], ["porch", "orphan"], ["person"], zone_cameras={"porch": "front"}
    )
    msgs = _by_topic(objects=layout)

    def shown(object_id, component, status, front_detect="ON") -> bool:
        cfg = msgs[f"homeassistant/{component}/pi_kitchen/{object_id}/config"]
        payloads = {TOPICS.available: "online", TOPICS.status: status}
        payloads[TOPICS.detect_state("front")] = front_detect
        payloads[TOPICS.detect_state("it's")] = "ON"
        return available(cfg, payloads)

    def status(front: str, quoted: str = "streaming") -> str:
        return json.dumps({"cameras": {"front": {"state": front}, "it's": {"state": quoted}}})

    for object_id, component in [
        ("front_person_occupancy", "binary_sensor"),
        ("front_all_count", "sensor"),
        ("porch_person_occupancy", "binary_sensor"),  # the zone follows its camera
        ("porch_all_count", "sensor"),
    ]:
        assert shown(object_id, component, status("streaming")), object_id
        for down in ("reconnecting", "ended", "starting", "stopped"):
            assert not shown(object_id, component, status(down)), (object_id, down)
        assert not shown(object_id, component, json.dumps({"state": "starting"}))
        # Detection switched off: streaming, but nothing is looked for.
        assert not shown(object_id, component, status("streaming"), front_detect="OFF")
    # A name with a quote is a safe Jinja string; the other camera's state does not count.
    assert shown("it_s_all_count", "sensor", status("reconnecting"))
    assert not shown("it_s_all_count", "sensor", status("streaming", "reconnecting"))
    # The frame rate (0 tells the outage), the switch and a zone whose camera is unknown
    # stay with the device alone.
    for object_id, component in [
        ("front_fps", "sensor"),
        ("front_detect", "switch"),
        ("orphan_all_count", "sensor"),
    ]:
        cfg = msgs[f"homeassistant/{component}/pi_kitchen/{object_id}/config"]
        assert [a["topic"] for a in cfg["availability"]] == [TOPICS.available], object_id
        assert "availability_mode" not in cfg
