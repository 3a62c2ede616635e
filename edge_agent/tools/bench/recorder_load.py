"""What a Home Assistant recorder would write for one edge-agent device: broker messages
per second per camera, and per entity the messages against the state changes.

Home Assistant's MQTT integration renders each entity's ``value_template`` over every
message on its ``state_topic``; the recorder writes a row only when the rendered state
changes. So a sensor fed at frame rate with a changing value fills the database, and
one fed on change writes one row per change. This module counts both from a
subscriber's log of (arrival time, topic, payload), using the retained discovery
configs the daemon published, rendered with Jinja as Home Assistant does (``jinja2``,
from the ``[test]`` extra; without it, raw payloads are compared).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

DISCOVERY_PREFIX = "homeassistant/"


class Message(NamedTuple):
    """One message as the subscriber saw it."""

    arrived: float  # monotonic seconds
    topic: str
    payload: bytes
    retain: bool


class EntityLoad(NamedTuple):
    """One discovered entity: messages on its state topic and the state changes they made."""

    entity: str  # the discovery object id, e.g. "cam0_red_count"
    component: str  # sensor, binary_sensor, switch, image
    topic: str
    messages: int
    changes: int  # what the recorder writes: the first state and every change


class LoadReport(NamedTuple):
    """The figures of one run."""

    seconds: float
    cameras: int
    per_topic: dict[str, int]
    background_per_s_per_camera: float  # every message but events, snapshots, discovery
    events_per_s: float
    entities: list[EntityLoad]


def renderer() -> Callable[[str, bytes], str]:
    """``render(template, payload)`` as Home Assistant does, or raw text without jinja2."""
    try:
        import jinja2
    except ImportError:
        return lambda template, payload: payload.decode("utf-8", "replace")
    env = jinja2.Environment(undefined=jinja2.Undefined)
    cache: dict[str, Any] = {}

    def render(template: str, payload: bytes) -> str:
        text = payload.decode("utf-8", "replace")
        try:
            value_json = json.loads(text)
        except ValueError:
            value_json = None
        compiled = cache.get(template) or cache.setdefault(template, env.from_string(template))
        return compiled.render(value=text, value_json=value_json)

    return render


def discovered(messages: Iterable[Message]) -> dict[str, dict[str, Any]]:
    """The discovery configs among the messages: ``{config topic: config}``."""
    configs: dict[str, dict[str, Any]] = {}
    for m in messages:
        if m.topic.startswith(DISCOVERY_PREFIX) and m.topic.endswith("/config") and m.payload:
            try:
                configs[m.topic] = json.loads(m.payload)
            except ValueError:
                continue
    return configs


def entity_loads(
    configs: dict[str, dict[str, Any]],
    messages: Sequence[Message],
    start: float = float("-inf"),
    render: Callable[[str, bytes], str] | None = None,
) -> list[EntityLoad]:
    """Per entity with a ``state_topic``: messages on it from ``start`` (monotonic) on, and
    the rendered state changes among them (the state before ``start`` is the baseline)."""
    render = render or renderer()
    by_topic: dict[str, list[Message]] = {}
    for m in messages:
        by_topic.setdefault(m.topic, []).append(m)
    loads = []
    for config_topic, config in sorted(configs.items()):
        topic = config.get("state_topic")
        if not topic:
            continue  # an image entity reads image_topic: counted with the snapshots
        component, object_id = config_topic.split("/")[1], config_topic.split("/")[-2]
        template = config.get("value_template")
        last, count, changes = None, 0, 0
        for m in by_topic.get(topic, []):
            text = m.payload.decode("utf-8", "replace")
            state = render(template, m.payload) if template else text
            if m.arrived >= start:
                count += 1
                changes += state != last
            last = state
        loads.append(EntityLoad(object_id, component, topic, count, changes))
    return loads


def summarize(
    messages: Sequence[Message], start: float, end: float, cameras: int, events_topic: str
) -> LoadReport:
    """The figures of the window ``[start, end)`` (monotonic) of a subscriber's log; the
    discovery configs may have come before it (they are published once, at start-up)."""
    seconds = max(1e-9, end - start)
    window = [m for m in messages if start <= m.arrived < end]
    per_topic: dict[str, int] = {}
    for m in window:
        per_topic[m.topic] = per_topic.get(m.topic, 0) + 1
    live = [m for m in window if not m.topic.startswith(DISCOVERY_PREFIX)]
    events = sum(1 for m in live if m.topic == events_topic)
    background = sum(
        1 for m in live if m.topic != events_topic and not m.topic.endswith("/snapshot")
    )
    before_end = [m for m in messages if m.arrived < end]
    return LoadReport(
        seconds=seconds,
        cameras=cameras,
        per_topic=per_topic,
        background_per_s_per_camera=background / seconds / max(1, cameras),
        events_per_s=events / seconds,
        entities=entity_loads(discovered(messages), before_end, start),
    )


def format_report(report: LoadReport) -> str:
    """The figures as text: the rate, then one line per entity."""
    lines = [
        f"{report.seconds:.0f} s, {report.cameras} camera(s): "
        f"{report.background_per_s_per_camera:.3f} messages/s per camera outside events "
        f"and snapshots; events {report.events_per_s:.3f}/s",
        f"{'entity':32} {'component':14} {'messages':>8} {'changes':>8}",
    ]
    for e in report.entities:
        lines.append(f"{e.entity:32} {e.component:14} {e.messages:>8} {e.changes:>8}")
    lines.append(f"recorder rows (state changes): {sum(e.changes for e in report.entities)}")
    return "\n".join(lines)


class Recorder:
    """A subscriber to ``#`` that logs every message with its arrival time (thread-safe).

    Args:
        host, port: the broker.
    """

    def __init__(self, host: str, port: int):
        from edge_agent.publishing.settings import MqttSettings, base_client

        self._lock = threading.Lock()
        self._log: list[Message] = []
        self._subscribed = threading.Event()
        self._client = base_client(
            MqttSettings(host=host, port=port), f"recorder-load-{id(self)}", None, reconnect=True
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe("#", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        entry = Message(time.monotonic(), msg.topic, bytes(msg.payload), bool(msg.retain))
        with self._lock:
            self._log.append(entry)

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the broker acknowledged the subscription."""
        return self._subscribed.wait(timeout)

    def messages(self) -> list[Message]:
        """Everything received so far, in arrival order."""
        with self._lock:
            return list(self._log)

    def stop(self) -> None:
        """Disconnect and end paho's thread."""
        self._client.disconnect()
        self._client.loop_stop()
