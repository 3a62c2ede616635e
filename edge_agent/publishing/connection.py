"""One MQTT connection: a fresh paho client driven by the publisher thread.

paho's external-loop API (``socket``/``loop_read``/``loop_write``/``loop_misc``) lets the
publisher's own thread do all network work, with a wake-up socket in the same
``select()`` so ``publish()`` from other threads is sent without polling. A new paho
client per connection means paho never retransmits old messages after a reconnect;
the publisher's spool does that, in order.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt import __version__ as paho_version
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.errors import PublishError
from edge_agent.publishing.endpoints import Endpoint
from edge_agent.publishing.packet_bound import BrokerLimits, bound_reads
from edge_agent.publishing.paho_log import LastError, paho_logger
from edge_agent.publishing.puback import plain_acks
from edge_agent.publishing.refusals import BrokerProblems
from edge_agent.publishing.settings import MqttSettings, new_client
from edge_agent.publishing.topics import Topics
from edge_agent.publishing.waker import Waker

logger = logging.getLogger(__name__)

_CORK = getattr(socket, "TCP_CORK", None)  # Linux only

# PUBACK reasons that say "not now" rather than "never" (Quota exceeded, Packet
# Identifier in use): the connection is dropped and the message is sent again later.
_TRANSIENT_PUBACK = frozenset({0x91, 0x97})
# CONNACK "Retain not supported": the broker keeps no retained messages, our will included.
_RETAIN_NOT_SUPPORTED = 0x9A


class Sent(NamedTuple):
    """A message sent on this connection and not acknowledged yet."""

    topic: str
    payload: bytes


_UNKNOWN = Sent("", b"")


def connect_properties(settings: MqttSettings) -> Properties:
    """MQTT 5 CONNECT properties: the Maximum Packet Size the device accepts.

    Session Expiry Interval stays 0 (the default): with clean_start the session ends
    with the connection, as ``clean_session`` does in 3.1.1.
    """
    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = settings.max_packet_size
    return props


def _safe(method: Callable[..., None]) -> Callable[..., None]:
    """Wrap a paho callback: MQTT callbacks never raise, they log and carry on."""

    def wrapper(self: Connection, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception:
            logger.exception("mqtt %s: error in %s", self.where, method.__name__)

    wrapper.__name__ = method.__name__
    return wrapper


class Connection:
    """A single connection attempt and, once CONNACKed, the live session.

    On CONNACK it subscribes the command topics (QoS 1) and, once the broker acknowledged
    the subscription (SUBACK), publishes retained ``online`` on ``available``, so both are
    redone on every reconnect and ``online`` means "commands are listened to".

    Args:
        settings: connection settings.
        topics: the device's topics (LWT, availability, command filters).
        context: TLS context or None.
        on_connected: called after a successful CONNACK.
        on_ack: called as ``on_ack(mid, sent, refused)`` for each acknowledged publish
            (PUBACK/PUBCOMP, or written to the socket for QoS 0); ``refused`` is the
            reason of an MQTT 5 PUBACK/PUBREC with a failure code (the broker did not
            take the message), else None.
        on_message: called with each incoming paho message.
        protocol: ``mqtt.MQTTv5`` (declares ``max_packet_size`` in the CONNECT) or
            ``mqtt.MQTTv311``.
        connack_timeout: seconds for the CONNACK (default ``connect_timeout``).
        broker: which of ``settings.endpoints()`` to connect to (default: the first).
        problems: where the link's problems are told: an incoming packet over
            ``max_packet_size``, read and discarded (:mod:`.packet_bound`), and command
            subscriptions the broker refused (default: a new one, for this connection).
        retain: False for a broker known to keep no retained messages: the will and
            every publish go unretained (see :attr:`retains`).
        probe_s: after a connection the broker ended soon after its CONNACK, this many
            seconds after the CONNACK with one QoS 1/2 publish unacknowledged at a time, so
            that the next end names its message (:meth:`suspect`; 0: no probing).
    """

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        context: ssl.SSLContext | None,
        *,
        on_connected: Callable[[], None],
        on_ack: Callable[[int, Sent, str | None], None],
        on_message: Callable[[mqtt.MQTTMessage], None],
        protocol: int = mqtt.MQTTv311,
        connack_timeout: float | None = None,
        broker: Endpoint | None = None,
        problems: BrokerProblems | None = None,
        retain: bool = True,
        probe_s: float = 0.0,
    ):
        self.settings, self.topics = settings, topics
        self.broker = broker or settings.endpoints()[0]
        self.where = str(self.broker)
        self.tls = context is not None
        self.connected = False
        self.subscribed = False
        self._closing = False  # close() began: no "online" after its "offline"
        self.error: str | None = None
        self._on_connected, self._on_ack, self._on_message = on_connected, on_ack, on_message
        self._deadline = 0.0
        self._ping_seen = 0.0  # when a PINGREQ awaiting its PINGRESP was first seen
        self.protocol = protocol
        self.opened = False  # TCP (+TLS) up and CONNECT sent
        self.answered = False  # a CONNACK came, accepting or refusing
        self.limits = BrokerLimits()  # what the broker's CONNACK allows
        self._retain = retain
        self._probe_s, self._probe_until = probe_s, 0.0
        self.retain_refused = False  # MQTT 5 CONNACK 0x9A: our retained will was refused
        self._connack_timeout = connack_timeout or settings.connect_timeout
        self.client = client = new_client(settings, topics, context, None, protocol, retain)
        self._problems = problems or BrokerProblems(self.where)
        self._reads = bound_reads(client, settings.max_packet_size, self._problems.oversized_packet)
        plain_acks(client)
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_subscribe = self._cb_subscribe
        client.on_message = self._cb_message
        self._errors = LastError()
        client.enable_logger(paho_logger(self._errors))
        self._sent: dict[int, Sent] = {}  # mid -> message, until acknowledged

    def open(self, tcp: socket.socket | None = None) -> None:
        """TLS handshake (if any) and send CONNECT; the CONNACK arrives through :meth:`step`.

        Blocking: run it off the publisher thread (:mod:`.connector`), which can abandon it.

        Args:
            tcp: a socket already connected to :attr:`broker` (resolved and connected
                under the attempt's deadline by the connector); None lets paho resolve
                and connect itself. paho is given the host name either way, so TLS SNI,
                the certificate's host name check and the websockets Host header are
                unchanged.

        Raises:
            OSError: refused, unreachable, timed out, TLS handshake or verification failed.
            ValueError: an invalid host or port.
        """
        s, (host, port) = self.settings, self.broker
        if tcp is not None:
            # paho 1.x-2.x open their TCP connection in this one method (name resolution
            # included, with no deadline); the rest of connect() stays paho's.
            if not hasattr(self.client, "_create_socket_connection"):
                raise PublishError(f"paho-mqtt {paho_version}: cannot pass it a connected socket")
            self.client._create_socket_connection = lambda: tcp
        if self.protocol == mqtt.MQTTv5:
            # A fresh session per connection (clean_start, session expiry 0), as in 3.1.1.
            self.client.connect(
                host, port, s.keepalive, clean_start=True, properties=connect_properties(s)
            )
        else:
            self.client.connect(host, port, s.keepalive)
        self.opened = True
        sock = self.client.socket()
        if hasattr(sock, "setsockopt"):
            # Small QoS 1 messages must not wait for the broker's delayed ACK (Nagle):
            # measured 43 ms median per command state without this, 0.8 ms with it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._deadline = time.monotonic() + self._connack_timeout

    @contextlib.contextmanager
    def corked(self, many: bool) -> Iterator[None]:
        """Publishes sent inside leave in as few TCP segments as they fit in, when ``many``.

        paho sends each message with its own ``send()``, which ``TCP_NODELAY`` turns into
        a segment of its own, and a wake-up of the broker for each. Corked (Linux's
        ``TCP_CORK``), the kernel holds them until the block ends, then sends them
        together. Without ``TCP_CORK`` (another OS, websockets) this does nothing.
        """
        sock = self.client.socket() if many and _CORK is not None else None
        try:
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)
        except (AttributeError, OSError):
            sock = None  # not a TCP socket (websockets wrap theirs), or already closed
        try:
            yield
        finally:
            if sock is not None:
                with contextlib.suppress(OSError):  # closed meanwhile: nothing to flush
                    sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)

    def step(self, timeout: float, wake: Waker | None = None) -> bool:
        """Wait for socket activity (or ``wake``) up to ``timeout``, then read/write/ping.

        Returns:
            False once the connection is unusable; :attr:`error` says why.
        """
        client = self.client
        sock = client.socket()
        if sock is None:
            return self._fail("socket closed")
        # Bytes already read: decrypted by TLS, or taken from the kernel for paho.
        pending = getattr(sock, "pending", lambda: 0)() or len(self._reads or ())
        wlist = [sock] if client.want_write() else []
        rlist = [sock] if wake is None else [sock, wake.socket]
        if wake is not None:
            timeout = wake.timeout(timeout)  # a held wake-up ends the wait when it ends
        readable, _, _ = select.select(rlist, wlist, [], 0 if pending else timeout)
        if wake is not None:
            wake.settle(wake.socket in readable)
        rc = mqtt.MQTT_ERR_SUCCESS
        if sock in readable or pending:
            rc = client.loop_read()
        if rc == mqtt.MQTT_ERR_SUCCESS and client.want_write():
            rc = client.loop_write()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        if self.error:
            return False
        if rc != mqtt.MQTT_ERR_SUCCESS:
            return self._fail(mqtt.error_string(rc))
        if not self.connected and time.monotonic() > self._deadline:
            return self._fail("no CONNACK within connect_timeout")
        if self._pong_overdue():
            return self._fail(f"no PINGRESP within keepalive ({self.settings.keepalive}s)")
        return True

    def _pong_overdue(self) -> bool:
        """True once a PINGREQ has waited ``keepalive`` for its PINGRESP. paho sends it
        again instead whenever a byte came meanwhile: a link that trickles bytes would
        never be given up, and results would wait behind it for ever."""
        if not getattr(self.client, "_ping_t", 0):  # no PINGREQ awaits its answer
            self._ping_seen = 0.0
            return False
        now = time.monotonic()
        self._ping_seen = self._ping_seen or now
        return now - self._ping_seen >= self.settings.keepalive

    @property
    def retains(self) -> bool:
        """False when the broker keeps no retained messages: a retained publish would end
        the connection, so every message goes unretained. Once an MQTT 5 CONNACK came its
        Retain Available says; before, or over 3.1.1, what earlier connections learned."""
        if self.connected and self.protocol == mqtt.MQTTv5:
            return self.limits.retain
        return self._retain

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Send a message; returns its message id (acknowledged later via ``on_ack``)."""
        qos = min(qos, self.limits.max_qos)  # above the broker's Maximum QoS it drops us
        if not qos and self.probing and self.limits.max_qos:  # acked: named only if unread
            qos = 1
        mid = self.client.publish(topic, payload, qos, retain and self.retains).mid
        if qos:  # a QoS 0 publish has no PUBACK to pop it (paho may report it already)
            self._sent[mid] = Sent(topic, payload)
        return mid

    def suspect(self) -> Sent | None:
        """The message the broker ended a :attr:`probing` connection for: the one
        unacknowledged (None when not probing: with several unacknowledged, the one that
        ended it is unknown). While probing, QoS 0 publishes go at QoS 1: a QoS 0 one sent
        long before the end (at the CONNACK, before a broker restart) was read."""
        if not self.probing:
            return None
        return next(iter(self._sent.values()), None)

    @property
    def probing(self) -> bool:
        """True while QoS 1/2 publishes go one at a time (see ``probe_s``)."""
        return self._probe_until > 0.0 and time.monotonic() < self._probe_until

    @property
    def quota(self) -> int:
        """QoS 1/2 publishes the broker takes now (its Receive Maximum less the unacked;
        1 less the unacked while :attr:`probing`)."""
        return (1 if self.probing else self.limits.receive_max) - len(self._sent)

    def too_large(self, topic: str, payload: bytes, qos: int) -> str | None:
        """:meth:`BrokerLimits.too_large` over this connection's MQTT version."""
        return self.limits.too_large(topic, payload, qos, self.protocol == mqtt.MQTTv5)

    def close(self, *, clean: bool, deadline: float = 0.0) -> None:
        """End the connection.

        Args:
            clean: publish retained ``offline`` (waiting for its PUBACK until
                ``deadline``) and send DISCONNECT, which makes the broker discard the LWT.
                Otherwise just close the socket: the broker publishes the LWT.
            deadline: ``time.monotonic()`` limit for the clean goodbye.
        """
        client = self.client
        self._closing = True  # a SUBACK read from now on must not say "online" again
        if clean and self.connected:
            info = client.publish(self.topics.available, "offline", 1, self.retains)
            while not info.is_published() and time.monotonic() < deadline:
                if not self.step(0.05):
                    break
            if self.error is None:
                client.disconnect()
                client.loop_write()
        sock = client.socket()
        if sock is not None:
            sock.close()
        self.connected = False

    def _fail(self, reason: str) -> bool:
        """Record why the connection is unusable."""
        self.error = self.error or reason
        return False

    # -- paho callbacks: run inside loop_read/loop_write, in the publisher thread ---------

    @_safe
    def _cb_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.answered = True
        if reason_code.is_failure:
            self.error = f"refused: {reason_code}"
            self.retain_refused = reason_code.value == _RETAIN_NOT_SUPPORTED and self._retain
            return
        self.connected = True
        if self._probe_s:
            self._probe_until = time.monotonic() + self._probe_s
        self.limits = BrokerLimits.of(properties)
        # ``online`` waits for the SUBACK (:meth:`_cb_subscribe`): a controller that sends
        # a command the moment it sees ``online`` must find the subscription in place.
        client.subscribe([(f, 1) for f in self.topics.command_filters()])
        self._on_connected()

    @_safe
    def _cb_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        detail = f": {self._errors.text}" if self._errors.text else ""
        self.error = self.error or f"connection lost ({reason_code}){detail}"

    @_safe
    def _cb_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        filters = self.topics.command_filters()
        self._problems.subscriptions(
            [f"{f}: {rc}" for f, rc in zip(filters, reason_codes) if rc.is_failure]
        )
        self.subscribed = True
        if not self._closing:  # after our "offline", a late "online" would stay retained
            # Retained only with a retained will: else it would outlive the device.
            self.publish(self.topics.available, b"online", 1, self._retain)

    @_safe
    def _cb_publish(self, client, userdata, mid, reason_code, properties) -> None:
        sent = self._sent.pop(mid, _UNKNOWN)
        refused = str(reason_code) if reason_code.is_failure else None
        if reason_code.value in _TRANSIENT_PUBACK:
            # Not acknowledged: the message stays in flight and is spooled and sent again.
            self._fail(f"broker refused a publish to {sent.topic} for now: {reason_code}")
            return
        self._on_ack(mid, sent, refused)

    @_safe
    def _cb_message(self, client, userdata, msg) -> None:
        self._on_message(msg)
