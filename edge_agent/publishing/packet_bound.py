"""Incoming packets over ``mqtt.max_packet_size`` are read and discarded, never buffered.

paho reads a packet's whole remaining length with one ``recv`` (a 100 MB packet allocates
100 MB at once) and keeps it until complete. MQTT 5 brokers honour the Maximum Packet Size
the device declares, but over MQTT 3.1.1 (``protocol = "3.1.1"``, the embedded amqtt, or
``auto`` after a fallback) a broker sends whatever it has. Refusing such a packet by
dropping the connection is no defence: a *retained* oversized message comes back on every
subscribe, so the device would reconnect forever. Instead the packet's body is read in
64 KiB chunks and thrown away (memory stays bounded), its topic is reported, a QoS 1
message is acknowledged (the broker would otherwise hold it in flight), and paho is
handed an empty PINGRESP in its place, so the session goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import paho.mqtt.client as mqtt

logger = logging.getLogger(__name__)

RECV_CHUNK = 64 * 1024
_HEAD_MAX = 2 + 65535 + 2  # topic length, the longest topic, packet id
_PUBLISH, _PINGRESP = 0x30, 0xD0


class PacketHead(NamedTuple):
    """What the start of a discarded packet says: PUBLISH topic, QoS, packet id, retain."""

    topic: str
    qos: int
    mid: int
    retain: bool


def publish_head(command: int, head: bytes) -> PacketHead | None:
    """Parse an MQTT PUBLISH's fixed header byte and the start of its variable header.

    Returns:
        None for a packet that is not a PUBLISH or whose head is incomplete.
    """
    if command & 0xF0 != _PUBLISH or len(head) < 2:
        return None
    qos, retain = (command >> 1) & 3, bool(command & 1)
    end = 2 + int.from_bytes(head[:2], "big")
    if len(head) < end + (2 if qos else 0):
        return None
    topic = head[2:end].decode("utf-8", "replace")
    mid = int.from_bytes(head[end : end + 2], "big") if qos else 0
    return PacketHead(topic, qos, mid, retain)


OnOversized = Callable[[str, int, int, bool], None]


def publish_size(topic: str, payload: bytes, qos: int, v5: bool) -> int:
    """Bytes of the PUBLISH packet paho sends for a message (MQTT 5: no properties), as
    a broker compares it with its Maximum Packet Size."""
    remaining = 2 + len(topic.encode("utf-8")) + (2 if qos else 0) + int(v5) + len(payload)
    length_bytes = 1 + sum(remaining >= limit for limit in (1 << 7, 1 << 14, 1 << 21))
    return 1 + length_bytes + remaining


class BrokerLimits(NamedTuple):
    """What the broker's MQTT 5 CONNACK lets the device send (MQTT 3.1.1: no limits).

    ``max_packet``: its Maximum Packet Size (0: none declared). ``receive_max``: its
    Receive Maximum, the QoS 1/2 publishes it takes unacknowledged at once (past it
    mosquitto refuses a QoS 2 one, which paho reports as delivered; other brokers end
    the connection). ``max_qos``: its Maximum QoS (AWS IoT Core, Azure Event Grid: 1); a
    publish above it ends the connection. ``retain``: its Retain Available (mosquitto's
    ``retain_available false``); a retained publish ends the connection.
    """

    max_packet: int = 0
    receive_max: int = 65535
    max_qos: int = 2
    retain: bool = True

    @classmethod
    def of(cls, properties: object) -> BrokerLimits:
        """The limits a CONNACK's properties declare."""
        max_packet = getattr(properties, "MaximumPacketSize", 0)
        max_qos = getattr(properties, "MaximumQoS", 2)
        retain = bool(getattr(properties, "RetainAvailable", 1))
        return cls(max_packet, getattr(properties, "ReceiveMaximum", 65535), max_qos, retain)

    def too_large(self, topic: str, payload: bytes, qos: int, v5: bool) -> str | None:
        """Why the broker would not take this publish (None if it would): over its Maximum
        Packet Size. Sent anyway, it ends the connection, and the message, sent first again
        after every reconnect, would hold back all behind it."""
        size = publish_size(topic, payload, qos, v5)
        if not self.max_packet or size <= self.max_packet:
            return None
        return f"Packet too large ({size} bytes, the broker's maximum is {self.max_packet})"


class ReadBuffer:
    """paho's reads served from one ``recv`` of up to 64 KiB.

    paho reads a packet as its first byte, then its length byte by byte, then its body:
    three system calls or more for each PUBACK. Taken from the kernel in one gulp, a
    burst of acknowledgements costs one. What is buffered must be read before the
    socket is waited on again (:meth:`__len__`).
    """

    def __init__(self, recv: Callable[[int], bytes]):
        self._recv = recv
        self._data = b""
        self._at = 0

    def __len__(self) -> int:
        """Bytes received and not yet handed to paho."""
        return len(self._data) - self._at

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes; raises as the socket's ``recv`` when none are buffered."""
        if self._at >= len(self._data):
            self._data, self._at = self._recv(RECV_CHUNK), 0
        out = self._data[self._at : self._at + bufsize]
        self._at += len(out)
        return out


def bound_reads(client: mqtt.Client, limit: int, on_oversized: OnOversized) -> ReadBuffer | None:
    """Read for paho through a :class:`ReadBuffer`, and discard any packet larger than
    ``limit`` bytes.

    Args:
        client: the paho client (its ``_sock_recv``/``_in_packet`` are used; pinned by
            tests/component/test_mqtt_packet_size.py).
        limit: ``mqtt.max_packet_size``.
        on_oversized: called as ``on_oversized(topic, size, limit, retained)`` once a
            packet was discarded (``topic`` "" if it was not a PUBLISH).

    Returns:
        The buffer (None on a paho these hooks do not fit, which reads unbuffered).
    """
    sock_recv = getattr(client, "_sock_recv", None)
    if sock_recv is None or not isinstance(getattr(client, "_in_packet", None), dict):
        logger.warning("mqtt: this paho version cannot bound incoming packets on the device")
        return None
    buffer = ReadBuffer(sock_recv)
    recv = buffer.recv
    head = bytearray()

    def bounded(bufsize: int) -> bytes:
        packet = client._in_packet
        if not (packet.get("have_remaining") and packet.get("remaining_length", 0) > limit):
            return recv(min(bufsize, RECV_CHUNK))
        data = recv(min(bufsize, RECV_CHUNK))
        if not data:
            return data
        head.extend(data[: max(0, _HEAD_MAX - len(head))])
        packet["packet"] = bytearray()  # paho appends this chunk only: nothing accumulates
        if len(data) >= packet["to_process"]:
            finish(packet)
        return data

    def finish(packet: dict) -> None:
        """The oversized packet is fully read: ack it, report it, hand paho a no-op."""
        size, parsed = packet["remaining_length"], publish_head(packet["command"], bytes(head))
        head.clear()
        if parsed is not None and parsed.qos == 1:
            client._send_puback(parsed.mid)
        elif parsed is not None and parsed.qos == 2:
            client._send_pubrec(parsed.mid)
        packet["command"], packet["remaining_length"] = _PINGRESP, 0
        on_oversized(parsed.topic if parsed else "", size, limit, bool(parsed and parsed.retain))

    client._sock_recv = bounded
    return buffer
