"""The tests' one MQTT client: :class:`MqttSubscriber` records, waits for and publishes.

Re-exported by :mod:`tests.support.broker`, beside the broker fixtures.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt


class Message(NamedTuple):
    """One received message."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Refused(Exception):
    """The broker refused the connection (CONNACK failure; the reason code is the message)."""


class MqttSubscriber:
    """The tests' one paho client: records what it receives and publishes with acks.

    Re-subscribes in on_connect, so it follows broker restarts. ``persistent=True``
    uses a persistent session (clean_session=False): a broker with persistence keeps
    queuing QoS 1 messages for it while it is reconnecting. With no ``topics`` it is a
    publisher only (an operator, an intruder). ``keep_messages=False`` keeps only a count
    and the latest payload per topic, for long runs.

    Args:
        host, port: the broker listener.
        topics: topic filters subscribed at QoS 1 on every connect.
        persistent: clean_session=False.
        tls: ``{"ca_certs": ..., "certfile": ..., "keyfile": ...}`` for Client.tls_set.
        username, password: the login (None: anonymous).
        protocol: ``mqtt.MQTTv311`` (default) or ``mqtt.MQTTv5`` (a refused publish then
            comes back as a PUBACK reason code instead of silence).
        keep_messages: keep every message (False: counts and latest payloads only).
        name: the client id's prefix (a random suffix follows), as seen in broker logs.
    """

    def __init__(
        self,
        host,
        port,
        topics=("#",),
        *,
        persistent=False,
        tls=None,
        username=None,
        password=None,
        protocol=mqtt.MQTTv311,
        keep_messages=True,
        name="test-sub",
    ):
        self.host, self.port, self.topics = host, port, tuple(topics)
        self.messages: list[Message] = []
        self.counts: dict[str, int] = {}
        self.latest: dict[str, bytes] = {}
        self.subacks = 0
        self.reason: Any = None  # the first CONNACK's reason code
        self._keep = keep_messages
        self._acks: dict[int, Any] = {}
        self._cond = threading.Condition()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{name}-{secrets.token_hex(4)}",
            clean_session=None if protocol == mqtt.MQTTv5 else not persistent,
            protocol=protocol,
        )
        if tls:
            self._client.tls_set(**{k: str(v) for k, v in tls.items()})
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(0.05, 0.2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

    def start(self, timeout: float = 10.0) -> MqttSubscriber:
        """Connect and wait for the CONNACK and (with topics) the SUBACK.

        Raises:
            Refused: the broker refused the login.
        """
        self._client.connect_async(self.host, self.port, keepalive=10)
        self._client.loop_start()
        with self._cond:
            answered = self._cond.wait_for(lambda: self.reason is not None, timeout)
        if not answered or self.reason.is_failure:
            self.stop()
            if answered:
                raise Refused(str(self.reason))
            raise TimeoutError(f"no CONNACK from {self.host}:{self.port} within {timeout}s")
        if self.topics:
            self.wait_subscribed(0, timeout)
        return self

    def wait_subscribed(self, after_subacks: int, timeout: float = 10.0) -> None:
        """Wait until more than ``after_subacks`` SUBACKs arrived (one per connection)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self.subacks > after_subacks, timeout)
        assert ok, f"subscriber not (re)subscribed to {self.host}:{self.port} in {timeout}s"

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, *, retain=False, timeout=10.0
    ) -> Any:
        """Publish and wait for the broker's acknowledgement (QoS 0: until sent).

        Returns:
            The PUBACK reason code (MQTT 5: ``Not authorized`` when the ACL refused it).
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        with self._cond:
            ok = self._cond.wait_for(lambda: info.mid in self._acks, timeout)
            assert ok, f"no PUBACK for {topic} within {timeout}s"
            return self._acks.pop(info.mid)

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    close = stop

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            if self.reason is None:
                self.reason = reason_code
            self._cond.notify_all()
        if not reason_code.is_failure and self.topics:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self.subacks += 1
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._acks[mid] = reason_code
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            if self._keep:
                self.messages.append(
                    Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))
                )
            self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1
            self.latest[msg.topic] = bytes(msg.payload)
            self._cond.notify_all()

    def count(self, topic: str) -> int:
        """Messages received so far on one topic (also with ``keep_messages=False``)."""
        with self._cond:
            return self.counts.get(topic, 0)

    def last_json(self, topic: str) -> Any:
        """The latest payload on topic, parsed, or None."""
        with self._cond:
            data = self.latest.get(topic)
        return json.loads(data) if data is not None else None

    def message(self, index: int, timeout: float) -> Message | None:
        """The ``index``-th message received (waiting up to ``timeout``), or None."""
        with self._cond:
            if self._cond.wait_for(lambda: len(self.messages) > index, timeout):
                return self.messages[index]
        return None

    def on(self, topic: str) -> list[Message]:
        """Messages received so far on one topic."""
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 10.0,
    ) -> Message:
        """The first message (already received or arriving) on topic matching predicate."""

        def find() -> Message | None:
            return next(
                (
                    m
                    for m in self.messages
                    if m.topic == topic and (predicate is None or predicate(m))
                ),
                None,
            )

        with self._cond:
            found = self._cond.wait_for(find, timeout)
            seen = sorted({m.topic for m in self.messages})
        assert found, f"no matching message on {topic} within {timeout}s; topics seen: {seen}"
        return found

    def wait_count(self, topic: str, count: int, timeout: float = 10.0) -> list[Message]:
        """Wait until at least ``count`` messages arrived on topic; return them all."""
        with self._cond:
            self._cond.wait_for(
                lambda: sum(m.topic == topic for m in self.messages) >= count, timeout
            )
        got = self.on(topic)
        assert len(got) >= count, f"{len(got)} of {count} messages on {topic} in {timeout}s"
        return got
