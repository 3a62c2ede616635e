"""What a connection keeps per publish, and that a closing one never says "online"
after its "offline"."""

from __future__ import annotations

import time

from edge_agent.publishing.connection import Connection
from edge_agent.publishing.packet_bound import BrokerLimits
from edge_agent.publishing.settings import MqttSettings
from edge_agent.publishing.topics import Topics


def new_connection() -> Connection:
    """A connection never opened (its broker address is unused)."""
    return Connection(
        MqttSettings(host="127.0.0.1", port=1),
        Topics("edge", "box1", ()),
        None,
        on_connected=lambda: None,
        on_ack=lambda *args: None,
        on_message=lambda msg: None,
    )


def _published(conn: Connection) -> list[str]:
    return [sent.topic for sent in conn._sent.values()]


def test_the_suback_says_online():
    conn = new_connection()
    conn._cb_subscribe(conn.client, None, 1, [], None)
    assert _published(conn) == [conn.topics.available]


def test_a_suback_read_while_closing_does_not_say_online_after_offline():
    """The SUBACK can be read while close() waits for the PUBACK of "offline": an
    "online" then would stay retained for a daemon that has stopped."""
    conn = new_connection()
    conn.close(clean=True)
    conn._cb_subscribe(conn.client, None, 1, [], None)
    assert conn.subscribed and _published(conn) == []


def test_qos_0_publishes_are_not_kept_waiting_for_an_acknowledgement():
    """Only QoS 1 and 2 get a PUBACK/PUBCOMP that pops their topic: a kept QoS 0 entry
    would stay until its message id came round again."""
    conn = new_connection()
    for _ in range(100):
        conn.publish("edge/box1/stats", b"{}", 0, False)
    assert _published(conn) == []
    conn.publish("edge/box1/results", b"{}", 1, False)
    assert _published(conn) == ["edge/box1/results"]


def test_while_probing_qos_0_goes_at_qos_1_but_never_above_the_brokers_maximum_qos():
    """QoS 1 names the message a probing connection ends with; above an MQTT 5 broker's
    Maximum QoS 0 the publish would end the connection itself."""
    conn = new_connection()
    conn._probe_until = time.monotonic() + 60  # probing
    conn.publish("edge/box1/stats", b"{}", 0, False)
    assert _published(conn) == ["edge/box1/stats"] and conn.quota == 0
    conn = new_connection()
    conn._probe_until = time.monotonic() + 60
    conn.limits = BrokerLimits(max_qos=0)
    conn.publish("edge/box1/stats", b"{}", 0, False)
    assert _published(conn) == [] and conn.quota == 1
