"""Home Assistant discovery across config changes, reloads and HA restarts, on a real broker.

A daemon's :class:`HaDiscovery` publishes through a real publisher; the broker's retained
store is then read back by a subscriber, as Home Assistant would.
"""

from __future__ import annotations

import threading

from edge_agent.config import parse_config
from edge_agent.daemon.ha_discovery import HaDiscovery, device_topics
from edge_agent.daemon.options import object_layout
from edge_agent.publishing.client import MqttPublisher, MqttSettings
from edge_agent.publishing.discovery import discovery_messages
from tests.support.broker import MqttSubscriber

ZONE = """
[[zone]]
name = "left"
camera = "door"
points = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
"""


def config(
    state_dir, port, *, camera="door", labels='"red", "green"', extra="", tail="", interval=5
):
    state_dir.mkdir(exist_ok=True)  # the daemon makes it at start
    return parse_config(
        f"""
[device]
id = "box1"
state_dir = "{state_dir}"
[[camera]]
name = "{camera}"
source = "synthetic"
[mqtt]
host = "127.0.0.1"
port = {port}
{extra}
[events]
labels = [{labels}]
[stats]
interval = {interval}
{tail}
""",
        env={},
    )


def produced(cfg) -> set[str]:
    if not cfg.mqtt.homeassistant:
        return set()
    return {
        t
        for t, _ in discovery_messages(
            device_topics(cfg, "box1"),
            discovery_prefix=cfg.mqtt.discovery_prefix,
            objects=object_layout(cfg, events=True),
        )
    }


class Run:
    """One daemon run: a publisher and its discovery, commands routed like the daemon's."""

    def __init__(self, cfg, tmp_path, **kw):
        self.discovery: HaDiscovery | None = None
        self.publisher = MqttPublisher(
            MqttSettings(host="127.0.0.1", port=cfg.mqtt.port, reconnect_min=0.1),
            device_topics(cfg, "box1"),
            tmp_path / "spool",
            on_command=lambda name, payload, topic: self.discovery.handle(topic, payload),
        )
        self.republished = threading.Event()
        self.discovery = HaDiscovery(
            self.publisher, self.publisher.topics, cfg, self.republished.set, **kw
        )
        self.publisher.start()
        assert self.publisher.wait_connected(10)

    def stop(self):
        self.discovery.close()
        self.publisher.stop(5)


def retained(port, prefix="homeassistant") -> dict[str, bytes]:
    """The configs a Home Assistant starting now would get."""
    late = MqttSubscriber("127.0.0.1", port, [f"{prefix}/#", "x/marker"]).start()
    try:
        late.publish("x/marker", b"m", qos=1)
        late.wait_for("x/marker")
        return {m.topic: m.payload for m in late.messages if m.topic != "x/marker"}
    finally:
        late.stop()


def test_a_config_change_removes_the_stale_entities(mqtt_broker, tmp_path):
    port = mqtt_broker.port
    before = config(tmp_path / "state", port, tail=ZONE)
    run = Run(before, tmp_path)
    run.discovery.publish(before, events=True)
    old = produced(before)
    ha = MqttSubscriber("127.0.0.1", port, ["homeassistant/#"]).start()
    for topic in old:
        ha.wait_for(topic)
    run.stop()
    assert set(retained(port)) == old

    # Camera renamed door -> gate, zone removed, label green dropped; restart.
    after = config(tmp_path / "state", port, camera="gate", labels='"red"')
    new = produced(after)
    stale = old - new
    assert len(stale) >= 10 and new - old
    run = Run(after, tmp_path)
    run.discovery.publish(after, events=True)
    try:
        for topic in stale:  # Home Assistant deletes an entity on an empty config
            ha.wait_for(topic, lambda m: m.payload == b"")
        for topic in new:
            ha.wait_for(topic, lambda m: m.payload != b"")
        kept = old & new
        assert kept and not [m for m in ha.messages if m.topic in kept and m.payload == b""]
        assert set(retained(port)) == new
    finally:
        ha.stop()
        run.stop()


def test_discovery_off_or_another_prefix_clears_what_was_published(mqtt_broker, tmp_path):
    port = mqtt_broker.port
    first = config(tmp_path / "state", port)
    run = Run(first, tmp_path)
    run.discovery.publish(first, events=True)
    run.stop()
    assert set(retained(port)) == produced(first)

    moved = config(tmp_path / "state", port, extra='discovery_prefix = "ha2"')
    run = Run(moved, tmp_path)
    run.discovery.publish(moved, events=True)
    run.stop()
    assert retained(port) == {}
    assert set(retained(port, "ha2")) == produced(moved)

    off = config(tmp_path / "state", port, extra="homeassistant = false")
    run = Run(off, tmp_path)
    run.discovery.publish(off, events=True)
    run.stop()
    assert retained(port, "ha2") == {} and retained(port) == {}


def test_a_reload_republishes_what_changed(mqtt_broker, tmp_path):
    port = mqtt_broker.port
    cfg = config(tmp_path / "state", port)
    fps = "homeassistant/sensor/box1/fps/config"
    detect = "homeassistant/switch/box1/door_detect/config"
    run = Run(cfg, tmp_path)
    ha = MqttSubscriber("127.0.0.1", port, ["homeassistant/#"]).start()
    try:
        run.discovery.publish(cfg, events=True)
        assert ha.wait_for(fps).json()["expire_after"] == 15
        ha.wait_for(detect)
        run.discovery.publish(config(tmp_path / "state", port, interval=30), events=True)
        ha.wait_for(fps, lambda m: m.json()["expire_after"] == 90)
        # Only what changed went out again.
        assert len(ha.on(detect)) == 1
    finally:
        ha.stop()
        run.stop()


def test_home_assistant_birth_brings_the_configs_again(mqtt_broker, tmp_path):
    port = mqtt_broker.port
    cfg = config(tmp_path / "state", port)
    run = Run(cfg, tmp_path, max_delay=0.2)
    try:
        run.discovery.publish(cfg, events=True)
        # Home Assistant on a broker that gives it no retained message (RabbitMQ 3.10):
        # it only sees what is published after it subscribed.
        ha = MqttSubscriber("127.0.0.1", port, ["homeassistant/#"]).start()
        configs = produced(cfg)
        for topic in configs:
            ha.wait_for(topic)
        seen = len(ha.messages)
        ha.publish("homeassistant/status", b"offline", qos=1)
        ha.publish("homeassistant/status", b"online", qos=1)
        assert run.republished.wait(10)
        for topic in configs:
            ha.wait_count(topic, 2)
        again = [m for m in ha.messages[seen:] if m.topic.endswith("/config")]
        assert {m.topic for m in again} == configs and len(again) == len(configs)
    finally:
        ha.stop()
        run.stop()


def test_disabling_a_camera_removes_the_entities_of_its_zones(mqtt_broker, tmp_path):
    port = mqtt_broker.port
    door = '[[camera]]\nname = "door"\nsource = "synthetic"\n'
    before = config(tmp_path / "state", port, camera="yard", tail=door + ZONE)
    run = Run(before, tmp_path)
    run.discovery.publish(before, events=True)
    run.stop()
    zone_entities = {t for t in retained(port) if "/box1/left_" in t}
    assert len(zone_entities) == 6  # occupancy and count for red, green and all

    # Camera door disabled, its zone "left" still in the file; restart. Nothing counts
    # in that zone any more: its entities would read "unknown" forever.
    after = config(tmp_path / "state", port, camera="yard", tail=door + "enabled = false\n" + ZONE)
    run = Run(after, tmp_path)
    run.discovery.publish(after, events=True)
    run.stop()
    left = sorted(t for t in retained(port) if "/box1/left_" in t or "/box1/door_" in t)
    assert left == [], f"entities of the disabled camera and its zone remain: {left}"
    assert "homeassistant/switch/box1/yard_detect/config" in retained(port)


def test_a_custom_discovery_prefix_still_hears_home_assistants_default_birth(mqtt_broker, tmp_path):
    """Home Assistant's birth topic is its own option (default ``homeassistant/status``),
    not derived from its discovery prefix: a user who changes only the prefix keeps it."""
    port = mqtt_broker.port
    cfg = config(tmp_path / "state", port, extra='discovery_prefix = "ha"')
    run = Run(cfg, tmp_path, max_delay=0.2)
    try:
        run.discovery.publish(cfg, events=True)
        ha = MqttSubscriber("127.0.0.1", port, ["ha/#"]).start()
        configs = produced(cfg)
        for topic in configs:
            ha.wait_for(topic)
        ha.publish("homeassistant/status", b"online", qos=1)
        assert run.republished.wait(10), "the default birth topic was not heard"
        for topic in configs:
            ha.wait_count(topic, 2)
    finally:
        ha.stop()
        run.stop()
