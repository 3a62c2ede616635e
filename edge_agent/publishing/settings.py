"""MQTT connection settings, their validation, TLS context, and paho client creation."""

from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.errors import ConfigError, PublishError
from edge_agent.publishing.endpoints import Endpoint, HostRotation, parse_endpoints
from edge_agent.publishing.topics import Topics

logger = logging.getLogger(__name__)

TRANSPORTS = ("tcp", "websockets")
PROTOCOLS = ("auto", "5", "3.1.1")


@dataclass
class MqttSettings:
    """How to reach the broker and how to publish (the daemon maps ``[mqtt]`` onto this).

    Attributes:
        host, port: the broker.
        hosts: brokers in failover order (``"mq1:8883"``, ``"[::1]:1883"``); when set it
            replaces ``host`` (``port`` stays the default port of an entry without one).
            See :meth:`endpoints`.
        transport: ``tcp`` or ``websockets`` (path ``ws_path``).
        client_id: MQTT client id; empty means ``edge-agent-{device_id}``.
        username, password: optional credentials (the password is never logged).
        keepalive: MQTT keepalive in seconds (a dead link is noticed after ~1.5x this).
        tls: use TLS; ``ca_file`` (default: system CAs), ``cert_file``/``key_file`` for
            client-certificate authentication, ``tls_insecure`` skips the host name check
            (the certificate chain is still verified).
        reconnect_min, reconnect_max: exponential reconnect backoff bounds in seconds.
        connect_timeout: one deadline for name resolution, TCP, TLS and sending CONNECT
            (off the publisher thread, :mod:`.connector`), then the wait for the CONNACK.
        spool_max_bytes: bound of the on-disk spool of unacknowledged results.
        qos_results, qos_stats: QoS of results (durable) and stats (best effort).
        retain_status: retain the status topic.
        max_inflight: durable messages awaiting PUBACK at once.
        max_queued: in-memory queue bound (messages waiting for the publisher thread).
        accept_retained_commands: act on retained command messages (off: a stale retained
            command would otherwise run again after every reconnect).
        max_unacked_s: longest a durable message is held only in memory: a result not
            acknowledged within half of it is spooled (and fsynced) without waiting for
            keepalive to declare the link dead.
        protocol: ``5`` (MQTT 5: the CONNECT declares ``max_packet_size``, so the broker
            never sends a bigger packet), ``3.1.1``, or ``auto`` (5, falling back to 3.1.1
            for a broker that does not answer an MQTT 5 CONNECT, e.g. the embedded one).
        max_packet_size: the largest MQTT packet the device accepts, in bytes; a bigger
            one is refused after reading its header (the connection is dropped), never
            buffered.
    """

    host: str = "localhost"
    port: int = 1883
    hosts: tuple[str, ...] = ()
    transport: str = "tcp"
    ws_path: str = "/mqtt"
    client_id: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive: int = 30
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    connect_timeout: float = 5.0
    spool_max_bytes: int = 64 * 1024 * 1024
    qos_results: int = 1
    qos_stats: int = 0
    retain_status: bool = True
    max_inflight: int = 100
    max_queued: int = 10_000
    accept_retained_commands: bool = False
    max_unacked_s: float = 2.0
    protocol: str = "auto"
    max_packet_size: int = 1 << 20

    def endpoints(self) -> tuple[Endpoint, ...]:
        """The brokers in failover order: ``hosts``, else ``host:port`` alone.

        Raises:
            ConfigError: naming the bad ``mqtt.hosts[i]`` entry.
        """
        if not self.hosts:
            return (Endpoint(self.host, self.port),)
        try:
            return parse_endpoints(self.hosts, self.port)
        except ValueError as exc:
            index, _, message = str(exc).partition(": ")
            raise ConfigError(message, key=f"mqtt.hosts{index}") from exc

    def validate(self) -> None:
        """Check every value.

        Raises:
            ConfigError: naming the offending ``mqtt.*`` key.
        """
        if not self.host:
            raise ConfigError("expected a host name or address", key="mqtt.host")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"expected integer 1..65535, got {self.port!r}", key="mqtt.port")
        self.endpoints()
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"expected one of {', '.join(TRANSPORTS)}, got {self.transport!r}",
                key="mqtt.transport",
            )
        for key in ("qos_results", "qos_stats"):
            if getattr(self, key) not in (0, 1, 2):
                raise ConfigError(
                    f"expected 0, 1 or 2, got {getattr(self, key)!r}", key=f"mqtt.{key}"
                )
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ConfigError(
                f"expected 0 < reconnect_min <= reconnect_max, got {self.reconnect_min!r} "
                f"and {self.reconnect_max!r}",
                key="mqtt.reconnect_min",
            )
        for key in (
            "keepalive",
            "connect_timeout",
            "spool_max_bytes",
            "max_inflight",
            "max_queued",
            "max_unacked_s",
        ):
            if not getattr(self, key) > 0:
                raise ConfigError(
                    f"expected a positive value, got {getattr(self, key)!r}", key=f"mqtt.{key}"
                )
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"expected one of {', '.join(PROTOCOLS)}, got {self.protocol!r}",
                key="mqtt.protocol",
            )
        if not 1024 <= self.max_packet_size <= 268_435_455:
            raise ConfigError(
                f"expected 1024..268435455 bytes, got {self.max_packet_size!r}",
                key="mqtt.max_packet_size",
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("cert_file and key_file go together", key="mqtt.cert_file")
        if self.password is not None and not self.username:
            raise ConfigError("a password needs a username", key="mqtt.username")


def ssl_context(settings: MqttSettings) -> ssl.SSLContext | None:
    """Build the TLS context once (None without TLS), so bad files fail at startup.

    Raises:
        ConfigError: a CA, certificate or key file is missing or unusable.
    """
    if not settings.tls:
        return None
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(settings, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"file not found: {path}", key=f"mqtt.{key}")
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}", key="mqtt.tls") from exc
    context.check_hostname = not settings.tls_insecure
    return context


def base_client(
    settings: MqttSettings,
    client_id: str,
    context: ssl.SSLContext | None,
    userdata: Any = None,
    protocol: int = mqtt.MQTTv311,
    *,
    reconnect: bool = False,
) -> mqtt.Client:
    """The one paho client factory (MQTT 3.1.1 or 5, clean session): transport,
    credentials, TLS.

    Every MQTT client of the project (the daemon's publisher, doctor, demo viewer, bench
    sink, ``model push``) comes from here, so each gets websockets, credentials and
    client-certificate TLS the same way.

    Args:
        settings: the broker and how to authenticate.
        client_id: the MQTT client id.
        context: from :func:`ssl_context` (None without TLS).
        userdata: paho's userdata.
        protocol: ``mqtt.MQTTv311`` or ``mqtt.MQTTv5``.
        reconnect: let paho's own loop thread reconnect (``loop_start`` users); the
            daemon's publisher reconnects itself with a fresh client instead.
    """
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        # MQTT 5 has clean_start (passed to connect()) instead of clean_session.
        clean_session=None if protocol == mqtt.MQTTv5 else True,
        userdata=userdata,
        protocol=protocol,
        transport=settings.transport,
        reconnect_on_failure=reconnect,
    )
    if settings.transport == "websockets":
        client.ws_set_options(path=settings.ws_path)
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if context is not None:
        client.tls_set_context(context)
        if settings.tls_insecure:
            client.tls_insecure_set(True)
    return client


def connect_failover(client: mqtt.Client, settings: MqttSettings) -> Endpoint:
    """Connect a :func:`base_client` (``reconnect=True``) to the first broker of
    ``settings.endpoints()`` that takes the TCP connection, and make paho's own
    reconnect loop move on to the next broker after each loss or failed attempt.

    Installs ``on_disconnect`` and ``on_connect_fail`` (the caller keeps ``on_connect``).

    Returns:
        The broker connected to (the CONNACK still arrives through ``on_connect``).

    Raises:
        PublishError: no broker took the connection; lists each one's error.
    """
    rotation = HostRotation(settings.endpoints())

    def next_broker() -> None:
        # Runs in paho's thread between attempts: connect_async only records where the
        # next reconnect goes (the host/port setters refuse while paho is "connecting").
        try:
            rotation.lost()
            client.connect_async(*rotation.current, settings.keepalive)
        except Exception:
            logger.exception("mqtt: cannot switch to the next broker")

    def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:  # not our own disconnect(), which must end the loop
            next_broker()

    def on_connect_fail(_c: Any, _u: Any) -> None:
        next_broker()

    errors = []
    for _ in rotation.endpoints:
        endpoint = rotation.current
        try:
            client.connect(endpoint.host, endpoint.port, settings.keepalive)
        except (OSError, ValueError) as exc:
            errors.append(f"{endpoint}: {exc}")
            rotation.failed()
            continue
        rotation.connected()
        client.on_disconnect, client.on_connect_fail = on_disconnect, on_connect_fail
        return endpoint
    raise PublishError(f"cannot reach any broker ({'; '.join(errors)})")


def new_client(
    settings: MqttSettings,
    topics: Topics,
    context: ssl.SSLContext | None,
    userdata: Any,
    protocol: int = mqtt.MQTTv311,
    will_retain: bool = True,
) -> mqtt.Client:
    """The device's client: :func:`base_client` plus the last will (retained unless the
    broker keeps no retained messages) and publishing limits."""
    client = base_client(
        settings,
        settings.client_id or f"edge-agent-{topics.device_id}",
        context,
        userdata,
        protocol,
    )
    client.will_set(topics.available, "offline", qos=1, retain=will_retain)
    # Unlimited in paho: the publisher bounds what is in flight itself.
    client.max_inflight_messages_set(0)
    client.connect_timeout = settings.connect_timeout
    client.suppress_exceptions = True
    return client


def encode_payload(topic: str, payload: bytes | bytearray | str | dict | list) -> bytes:
    """Bytes of a payload: bytes as is, str as UTF-8, dict/list as compact JSON.

    Raises:
        PublishError: the payload is of another type or not JSON-serializable.
    """
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (dict, list)):
        try:
            return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise PublishError(f"{topic}: payload is not JSON-serializable: {exc}") from exc
    raise PublishError(f"{topic}: unsupported payload type {type(payload).__name__}")
