"""What ``edge-agent demo`` shows: the daemon's MQTT messages as readable lines.

:class:`Viewer` is a real paho subscriber to one device's topics; the ``format_*``
functions turn a results, stats or status payload into one line each.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from typing import Any, Callable

import paho.mqtt.client as mqtt

from edge_agent.errors import PublishError
from edge_agent.publishing.settings import MqttSettings, base_client, ssl_context
from edge_agent.publishing.topics import Topics

logger = logging.getLogger(__name__)

CLIENT_PREFIX = "edge-agent-demo-viewer"


# ----------------------------------------------------------------------- formatting


def _ms(value: Any) -> str:
    """A latency in ms, or "-" when the window was empty."""
    return "-" if value is None else f"{value:.2f}"


def format_result(msg: dict[str, Any]) -> str:
    """One results message: time, camera, frame, backend, invoke ms, each detection."""
    ts = float(msg.get("timestamp", 0.0))
    clock = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"
    parts = []
    for r in msg.get("results", []):
        text = f"{r.get('label') or r.get('id')} {float(r.get('score', 0)):.2f}"
        if r.get("box") is not None:
            text += " [" + ",".join(str(round(v)) for v in r["box"]) + "]"
        parts.append(text)
    head = (
        f"{clock}  {msg.get('camera')}  frame {msg.get('frame_id'):>5}  {msg.get('backend')}"
        f"  {float(msg.get('inference_ms', 0)):6.2f} ms"
    )
    return f"{head}  {'  '.join(parts) or '(nothing)'}"


def format_stats(msg: dict[str, Any]) -> str:
    """One stats message: fps, invoke p50/p99, drops, backend, counters."""
    invoke = msg.get("latency_ms", {}).get("invoke", {})
    counters = msg.get("counters", {})
    line = (
        f"stats    {float(msg.get('fps', 0)):.1f} fps | invoke p50 {_ms(invoke.get('p50'))} ms"
        f"  p99 {_ms(invoke.get('p99'))} ms | {msg.get('dropped_frames', 0)} dropped frames"
        f" | backend {msg.get('backend')} | {counters.get('frames', 0)} frames"
    )
    if msg.get("worker_restarts"):
        line += f" | {msg['worker_restarts']} worker restarts"
    for name, celsius in msg.get("apex_temperature_c", {}).items():
        line += f" | {name} {celsius:.0f} C"
    return line


def format_event(msg: dict[str, Any]) -> str:
    """One object event: ``event new red #3 0.91 zones left``."""
    line = f"event    {msg.get('type')} {msg.get('label')} #{msg.get('track_id')}"
    line += f" {float(msg.get('top_score') or 0.0):.2f}"
    if msg.get("zones"):
        line += " in " + ",".join(msg["zones"])
    return line


def format_status(msg: dict[str, Any]) -> str:
    """One status message: state, backend, model, cameras, last error (those present)."""
    model = msg.get("model") or {}
    parts = [f"status   {msg.get('state')}"]
    if msg.get("backend"):
        runtime = f" ({model['runtime']})" if model.get("runtime") else ""
        parts.append(f"backend {msg['backend']}{runtime}")
    if model.get("name"):
        parts.append(f"model {model['name']}")
    cams = (msg.get("cameras") or {}).items()
    if cams:
        parts.append("camera " + ", ".join(f"{n} {c.get('state')}" for n, c in cams))
    if msg.get("last_error"):
        parts.append(f"last error: {msg['last_error']}")
    return " | ".join(parts)


# --------------------------------------------------------------------------- viewer


class Viewer:
    """A paho subscriber to one device's topics that turns messages into lines.

    Args:
        settings: the broker (host, port, optional credentials).
        topics: the demo device's topics.
        show: called with each line, from paho's thread (must not block).
    """

    def __init__(self, settings: MqttSettings, topics: Topics, show: Callable[[str], None]):
        self.settings = settings
        self.topics = topics
        self.results = 0
        self.stats = 0
        self.labels: Counter[str] = Counter()
        self._show = show
        self._status: Any = None
        self._topics_seen: set[str] = set()  # paho's thread adds, stop time reads
        self._subscribed = threading.Event()
        self._client = base_client(
            settings, f"{CLIENT_PREFIX}-{os.getpid()}", ssl_context(settings), reconnect=True
        )
        self._client.reconnect_delay_set(0.2, 2.0)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> None:
        """Connect and wait for the subscription.

        Raises:
            PublishError: no SUBACK within the timeout.
        """
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            where = f"{self.settings.host}:{self.settings.port}"
            raise PublishError(f"broker {where}: cannot subscribe within {timeout:g}s")

    def clear_retained(self) -> None:
        """Remove the retained messages the demo device left on a broker that stays up
        (status, model, counts, detection state...: every topic it published on; an
        empty retained message on a topic that holds none changes nothing)."""
        fixed = {self.topics.available, self.topics.status, self.topics.model}
        streams = {self.topics.results, self.topics.stats, self.topics.events}
        for topic in sorted((fixed | set(self._topics_seen)) - streams):
            self._client.publish(topic, b"", qos=1, retain=True).wait_for_publish(2.0)

    def stop(self) -> None:
        """Disconnect and end paho's thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, code: Any, props: Any):
        """Subscribe on every (re)connect."""
        if not code.is_failure:
            client.subscribe(f"{self.topics.base}/#", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """Format one message (never raises: a bad payload is logged and skipped)."""
        self._topics_seen.add(msg.topic)
        try:
            line = self._line(msg.topic[len(self.topics.base) + 1 :], bytes(msg.payload))
        except Exception:
            logger.exception("demo: cannot show the message on %s", msg.topic)
            return
        if line:
            self._show(line)

    def _line(self, kind: str, payload: bytes) -> str | None:
        """The line for a message, or None for the ones not shown."""
        if not payload:
            return None
        if kind == "available":
            return f"daemon   {payload.decode('utf-8', 'replace')}"
        if kind == "events":
            return format_event(json.loads(payload))
        if kind not in ("results", "stats", "status"):
            return None
        msg = json.loads(payload)
        if kind == "results":
            self.results += 1
            self.labels.update(str(r.get("label") or r.get("id")) for r in msg.get("results", []))
            return format_result(msg)
        if kind == "stats":
            self.stats += 1
            return format_stats(msg)
        line = format_status(msg)
        if line == self._status:
            return None
        self._status = line
        return line
