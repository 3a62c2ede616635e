"""paho's log: its socket error says why a connection died, its per-packet debug lines
are formatted only when debug logging is on."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import pytest

from edge_agent.publishing.connection import Connection
from edge_agent.publishing.settings import MqttSettings
from edge_agent.publishing.topics import Topics

CONNACK = bytes([0x20, 2, 0, 0])  # MQTT 3.1.1: session not present, accepted


class ResettingBroker:
    """Accepts one client, reads its CONNECT, accepts it, then resets the connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reset = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        conn.recv(4096)  # the CONNECT
        conn.sendall(CONNACK)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: an RST, not a FIN
        self.reset.set()

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def _connection(port: int) -> Connection:
    return Connection(
        MqttSettings(host="127.0.0.1", port=port),
        Topics("edge", "box1", ()),
        None,
        on_connected=lambda: None,
        on_ack=lambda *args: None,
        on_message=lambda msg: None,
    )


def _run_until_lost(conn: Connection, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    conn.open()
    while conn.step(0.2):
        assert time.monotonic() < deadline, "the reset connection was never noticed"


def test_a_reset_connection_says_what_the_socket_said():
    broker = ResettingBroker()
    try:
        conn = _connection(broker.port)
        _run_until_lost(conn)
    finally:
        broker.close()
    assert broker.reset.is_set()
    assert conn.error is not None
    # paho logs the socket error at ERROR; the connection keeps it for the status
    assert "Connection reset by peer" in conn.error, conn.error


def test_paho_formats_no_line_per_packet_unless_debugging(caplog):
    with caplog.at_level(logging.INFO, logger="edge_agent.publishing.connection"):
        conn = _connection(1)
    # an on_log callback would make paho format a debug line for every packet
    assert conn.client.on_log is None
    assert not conn.client._logger.isEnabledFor(logging.DEBUG)


@pytest.mark.parametrize("debug", [True, False])
def test_with_debug_logging_paho_lines_reach_our_paho_logger(caplog, debug):
    level = logging.DEBUG if debug else logging.INFO
    broker = ResettingBroker()
    try:
        with caplog.at_level(level, logger="edge_agent.publishing.connection"):
            conn = _connection(broker.port)
            _run_until_lost(conn)
    finally:
        broker.close()
    paho = [r for r in caplog.records if r.name == "edge_agent.publishing.connection.paho"]
    if debug:
        assert any("Sending CONNECT" in r.getMessage() for r in paho), paho
        assert any(r.levelno == logging.ERROR for r in paho)
    else:
        # the lost connection is reported once, by the publisher, not by paho as well
        assert paho == []
    assert "Connection reset by peer" in conn.error
