"""What the fleet reports over MQTT: every device's retained status and model state.

The simulator reads outcomes the way an operator does, from the broker, never from the
agents' memory: a device counts as updated when its own retained
``{prefix}/{id}/model`` says so.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from edge_agent.errors import PublishError
from edge_agent.publishing.settings import MqttSettings, base_client
from edge_agent.updates.states import TERMINAL, UpdateState

logger = logging.getLogger(__name__)

_TERMINAL = {s.value for s in TERMINAL}


class AgentOutcome(NamedTuple):
    """A device's latest model state, as it published it."""

    state: str  # an UpdateState value, or "" before any model state
    reason: str | None
    name: str | None
    version: str | None
    request_id: str | None
    message: str | None

    @property
    def terminal(self) -> bool:
        """True when the request it names has ended."""
        return self.state in _TERMINAL

    @property
    def active(self) -> bool:
        """True when the device runs the release it names."""
        return self.state == UpdateState.ACTIVE.value


NO_STATE = AgentOutcome("", None, None, None, None, None)


def _outcome(doc: Mapping[str, Any]) -> AgentOutcome:
    """An outcome from a model state document (missing keys read as None)."""

    def text(key: str) -> str | None:
        value = doc.get(key)
        return None if value is None else str(value)

    return AgentOutcome(
        str(doc.get("state") or ""),
        text("reason"),
        text("name"),
        text("version"),
        text("request_id"),
        text("message"),
    )


class FleetObserver:
    """Subscribes to ``{prefix}/+/status`` and ``{prefix}/+/model`` and keeps the latest.

    Args:
        broker: where the fleet is.
        prefix: the fleet's topic prefix.
    """

    def __init__(self, broker: MqttSettings, prefix: str):
        self._prefix = prefix
        self._lock = threading.Condition()
        self._status: dict[str, dict[str, Any]] = {}
        self._model: dict[str, AgentOutcome] = {}
        self._connected = threading.Event()
        self._client = base_client(broker, f"fleet-observer-{uuid.uuid4().hex[:8]}", None)
        self._client.reconnect_delay_set(0.2, 2.0)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        try:
            self._client.connect(broker.host, broker.port, 30)
        except OSError as exc:
            raise PublishError(f"fleet observer: {broker.host}:{broker.port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(broker.connect_timeout):
            self.close()
            raise PublishError(f"fleet observer: no CONNACK from {broker.host}:{broker.port}")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        """Subscribe (again) after each connect; never raises."""
        try:
            if not rc.is_failure:
                client.subscribe([(f"{self._prefix}/+/status", 1), (f"{self._prefix}/+/model", 1)])
                self._connected.set()
        except Exception:
            logger.exception("fleet observer: subscribe failed")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Keep the latest status or model state per device; never raises."""
        try:
            device, leaf = msg.topic.split("/")[-2:]
            doc = json.loads(msg.payload) if msg.payload else None
            if not isinstance(doc, dict):
                return
            with self._lock:
                if leaf == "status":
                    self._status[device] = doc
                else:
                    self._model[device] = _outcome(doc)
                self._lock.notify_all()
        except Exception:
            logger.debug("fleet observer: unreadable message on %s", msg.topic, exc_info=True)

    def running(self) -> set[str]:
        """Devices whose latest status says ``running``."""
        with self._lock:
            return {d for d, s in self._status.items() if s.get("state") == "running"}

    def outcomes(self, devices: Iterable[str]) -> dict[str, AgentOutcome]:
        """The latest model state of each device (:data:`NO_STATE` when none yet)."""
        with self._lock:
            return {d: self._model.get(d, NO_STATE) for d in devices}

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``done()`` (called under the observer's lock) or the timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 1.0))
            return True

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
