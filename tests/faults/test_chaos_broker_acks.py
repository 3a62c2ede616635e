"""Chaos: the connection drops while acknowledgements arrived out of send order.

A QoS 2 result waits for its PUBREC while the QoS 1 events sent after it are already
acknowledged (held in the in-flight window, released in send order). A scripted MQTT
3.1.1 broker (real sockets) does exactly that, then closes the connection. What must
hold: the acknowledged events count as delivered, the result goes to the spool, and a
clean stop then leaves no "possibly lost" results for the next start (README: 0 after a
clean stop).
"""

from __future__ import annotations

import socket
import threading

from tests.support.broker import HOST, wait_until

COMMAND = "edge/dev1/cmd/model/update"


def _read_packet(conn: socket.socket) -> tuple[int, bytes]:
    """One MQTT packet: (first byte, body)."""
    head = conn.recv(1)
    if not head:
        raise ConnectionError("closed")
    length, shift = 0, 0
    while True:
        byte = conn.recv(1)[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return head[0], body


class ScriptedBroker:
    """Accepts one connection: CONNACK, SUBACK, PUBACK for every QoS 1 publish, nothing
    for QoS 2 ones. After ``events`` publishes on the events topic it sends a command
    (so the acknowledgements before it were read) and, once :meth:`close` is called,
    closes the connection and stops listening."""

    def __init__(self, events: int):
        self._events = events
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scripted-broker", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(10)
        self._listener.close()

    def _run(self) -> None:
        conn, _ = self._listener.accept()
        conn.settimeout(0.1)
        seen = 0
        try:
            while not self._closing.is_set():
                try:
                    kind, body = _read_packet(conn)
                except TimeoutError:
                    continue
                if kind == 0x10:  # CONNECT
                    conn.sendall(b"\x20\x02\x00\x00")
                elif kind == 0x82:  # SUBSCRIBE: grant QoS 1 to each filter
                    filters, pos = 0, 2
                    while pos < len(body):
                        pos += 2 + int.from_bytes(body[pos : pos + 2], "big") + 1
                        filters += 1
                    conn.sendall(bytes([0x90, 2 + filters]) + body[:2] + b"\x01" * filters)
                elif kind & 0xF0 == 0x30 and (kind >> 1) & 3 == 1:  # PUBLISH QoS 1
                    end = 2 + int.from_bytes(body[:2], "big")
                    conn.sendall(b"\x40\x02" + body[end : end + 2])
                    seen += body[2:end] == b"edge/dev1/events"
                    if seen == self._events:
                        topic = COMMAND.encode()
                        packet = len(topic).to_bytes(2, "big") + topic + b"{}"
                        conn.sendall(bytes([0x30, len(packet)]) + packet)
                elif kind == 0xC0:  # PINGREQ
                    conn.sendall(b"\xd0\x00")
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()


def test_events_acknowledged_behind_an_unacknowledged_result_are_not_counted_lost(
    tmp_path, mqtt_publisher_factory
):
    broker = ScriptedBroker(events=3)
    heard = threading.Event()
    pub = mqtt_publisher_factory(
        broker.port,
        spool_dir=tmp_path / "spool",
        protocol="3.1.1",
        qos_results=2,
        on_command=lambda name, payload, topic: heard.set(),
    )
    assert pub.wait_connected(10)
    pub.publish_result({"seq": 0})  # QoS 2: never answered
    for _ in range(3):
        pub.publish("edge/dev1/events", b"{}", 1, durable=True)  # answered at once
    assert heard.wait(10), "the command after the three acknowledgements"
    broker.close()  # the connection drops with the result unanswered
    wait_until(lambda: not pub.connected, 10, "the connection lost")
    assert pub.stop(5)
    again = mqtt_publisher_factory(broker.port, spool_dir=tmp_path / "spool", protocol="3.1.1")
    assert again.stats()["spool_pending"] == 1  # the result, to replay
    assert again.durability()["possibly_lost_last_run"] == 0
