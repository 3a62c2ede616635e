"""MqttPublisher against a real broker: delivery, LWT, commands, outages, spool replay."""

from __future__ import annotations

import collections
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from edge_agent.publishing import durable as durable_module
from edge_agent.publishing.embedded_broker import EmbeddedBroker
from edge_agent.publishing.spool import encode_record
from tests.support.broker import MqttSubscriber, free_port, wait_until
from tests.support.paths import REPO

BOTH = pytest.mark.parametrize("mqtt_broker", ["mosquitto", "amqtt"], indirect=True)
RESULTS = "edge/dev1/results"


def _send(broker, topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish one message from a separate client (a controller sending a command)."""
    client = MqttSubscriber(broker.host, broker.port, (), name="ctl").start()
    try:
        client.publish(topic, payload, qos=1, retain=retain, timeout=5)
    finally:
        client.stop()


def _seqs(sub: MqttSubscriber, topic: str = RESULTS) -> list[int]:
    return [m.json()["seq"] for m in sub.on(topic)]


@BOTH
def test_publish_receive_and_online_retained(mqtt_broker, mqtt_subscriber, mqtt_publisher_factory):
    pub = mqtt_publisher_factory(mqtt_broker.port)
    assert pub.wait_connected(10) and pub.connected
    for i in range(20):
        pub.publish_result({"seq": i})
    pub.publish_stats({"fps": 29.5})
    pub.publish("edge/dev1/raw", b"\x00\xff", qos=0)
    mqtt_subscriber.wait_count(RESULTS, 20)
    assert _seqs(mqtt_subscriber) == list(range(20))
    assert mqtt_subscriber.wait_for("edge/dev1/stats").json() == {"fps": 29.5}
    assert mqtt_subscriber.wait_for("edge/dev1/raw").payload == b"\x00\xff"
    assert mqtt_subscriber.wait_for("edge/dev1/available").payload == b"online"
    wait_until(lambda: pub.stats()["published"] == 22, 5, "acks")
    late = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, ["edge/dev1/available"]).start()
    try:
        msg = late.wait_for("edge/dev1/available")
        assert (msg.payload, msg.retain) == (b"online", True)
    finally:
        late.stop()


@BOTH
def test_stop_delivers_queued_results_then_publishes_offline(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory, tmp_path
):
    if type(mqtt_broker).__name__ == "AmqttBroker" and sys.version_info >= (3, 13):
        # Seen on CPython 3.13.0 with amqtt 0.12: the broker acknowledges every message
        # but forwards only 46 of 200 to the subscriber; mosquitto covers this property.
        pytest.skip("amqtt on CPython 3.13 drops QoS 1 deliveries of a burst")
    changes = []
    pub = mqtt_publisher_factory(
        mqtt_broker.port, spool_dir=tmp_path / "s", on_connection_change=changes.append
    )
    assert pub.wait_connected(10)
    for i in range(200):
        pub.publish_result({"seq": i})
    # A generous stop: the embedded amqtt broker acknowledges slowly on a loaded box
    # (CPython 3.13 especially); the drain window is 60% of it.
    assert pub.stop(40)
    assert pub.stats()["spool_pending"] == 0 and pub.stats()["replayed"] == 0
    mqtt_subscriber.wait_count(RESULTS, 200, timeout=30)
    assert _seqs(mqtt_subscriber) == list(range(200))
    avail = mqtt_subscriber.wait_for("edge/dev1/available", lambda m: m.payload == b"offline")
    assert avail.payload == b"offline"
    assert changes == [True, False]


_VICTIM = """
import sys, time
from edge_agent.publishing.client import MqttPublisher, MqttSettings
from edge_agent.publishing.topics import Topics
pub = MqttPublisher(MqttSettings(host="127.0.0.1", port=int(sys.argv[1]), keepalive=5),
                    Topics("edge", "victim"), sys.argv[2])
pub.start()
assert pub.wait_connected(10)
print("ready", flush=True)
time.sleep(60)
"""


@BOTH
def test_lwt_offline_when_the_process_is_killed(mqtt_broker, mqtt_subscriber, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _VICTIM, str(mqtt_broker.port), str(tmp_path / "spool")],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        online = mqtt_subscriber.wait_for("edge/victim/available")
        assert online.payload == b"online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        msg = mqtt_subscriber.wait_for(
            "edge/victim/available", lambda m: m.payload == b"offline", timeout=10
        )
        assert msg.payload == b"offline"
    finally:
        proc.kill()
        proc.wait(5)


@BOTH
def test_commands_dispatched_and_still_received_after_broker_restart(
    mqtt_broker, mqtt_publisher_factory
):
    got = []

    def on_command(name, payload, topic):
        got.append((name, payload, topic))
        if payload == b"boom":
            raise RuntimeError("handler bug")  # must not break the publisher

    # A stale retained command must not run again at each (re)subscription.
    _send(mqtt_broker, "edge/dev1/cmd/stale", b"x", retain=True)
    changes = []
    pub = mqtt_publisher_factory(
        mqtt_broker.port,
        groups=["lobby"],
        on_command=on_command,
        on_connection_change=changes.append,
    )
    assert pub.wait_connected(10)
    _send(mqtt_broker, "edge/dev1/cmd/model/update", b'{"version": 2}')
    _send(mqtt_broker, "edge/dev1/cmd/restart", b"boom")
    wait_until(lambda: len(got) == 2, 5, "two commands")
    mqtt_broker.stop()
    mqtt_broker.start()
    wait_until(lambda: pub.stats()["reconnects"] == 1, 10, "reconnect")
    assert pub.wait_connected(10)
    _send(mqtt_broker, "edge/group/lobby/cmd/model/update", b"{}")
    _send(mqtt_broker, "edge/other/cmd/restart", b"not ours")
    _send(mqtt_broker, "edge/dev1/cmd/ping", b"1")
    wait_until(lambda: len(got) == 4, 5, "commands after restart")
    assert got == [
        ("model/update", b'{"version": 2}', "edge/dev1/cmd/model/update"),
        ("restart", b"boom", "edge/dev1/cmd/restart"),
        ("model/update", b"{}", "edge/group/lobby/cmd/model/update"),
        ("ping", b"1", "edge/dev1/cmd/ping"),
    ]
    assert changes == [True, False, True]


def test_outage_loses_nothing_and_keeps_order(mqtt_broker_factory, mqtt_publisher_factory):
    # A persistent broker and subscriber session: the subscriber's queue survives the
    # restart, so what it receives is exactly what the publisher delivered.
    broker = mqtt_broker_factory("mosquitto", persistent=True)
    sub = MqttSubscriber(broker.host, broker.port, [RESULTS], persistent=True).start()
    try:
        pub = mqtt_publisher_factory(broker.port)
        assert pub.wait_connected(10)
        n = 300
        for i in range(100):
            pub.publish_result({"seq": i})
        broker.stop()
        for i in range(100, 200):  # 2 s of results produced while the broker is down
            pub.publish_result({"seq": i})
            time.sleep(0.02)
        broker.start()
        for i in range(200, n):  # while the publisher is still reconnecting
            pub.publish_result({"seq": i})
        wait_until(lambda: set(_seqs(sub)) >= set(range(n)), 15, "all results")
        wait_until(lambda: pub.stats()["inflight"] == 0, 5, "acks")
        seqs = _seqs(sub)
        assert list(dict.fromkeys(seqs)) == list(range(n))  # first arrivals in order
        # At-least-once: a duplicate is only ever a re-send of a message that was in
        # flight when the broker went down, never of one produced during the outage.
        duplicates = sorted(s for s, count in collections.Counter(seqs).items() if count > 1)
        print(f"outage: {n} sent, {len(set(seqs))} received, duplicates {duplicates}")
        assert all(s < 100 for s in duplicates), seqs
        stats = pub.stats()
        assert stats["spool_pending"] == 0 and stats["reconnects"] == 1
        assert stats["spooled"] >= 100 and stats["replayed"] >= 100
    finally:
        sub.stop()


@BOTH
def test_spool_survives_a_publisher_restart(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory, tmp_path
):
    spool = tmp_path / "spool"
    down = mqtt_publisher_factory(free_port(), spool_dir=spool)  # nothing listens there
    for i in range(50):
        down.publish_result({"seq": i})
        down.publish_stats({"fps": 1})
    wait_until(lambda: down.stats()["spooled"] == 50, 5, "spooling")
    assert down.stop(5)
    assert down.stats()["dropped"] == 50  # the stats, best effort
    up = mqtt_publisher_factory(mqtt_broker.port, spool_dir=spool)
    up.publish_result({"seq": 50})
    mqtt_subscriber.wait_count(RESULTS, 51)
    assert _seqs(mqtt_subscriber) == list(range(51))  # replayed first, then the new one
    # >= 50: seq 50 itself is spooled too if the CONNACK takes over max_unacked_s / 2
    # (amqtt: the MQTT 5 attempt times out first, then 3.1.1 connects).
    wait_until(
        lambda: up.stats()["replayed"] >= 50 and up.stats()["spool_pending"] == 0,
        5,
        "replay commits",
    )
    assert mqtt_subscriber.on("edge/dev1/stats") == []


@BOTH
def test_spool_bound_drops_the_oldest_and_counts(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory, tmp_path
):
    record = len(encode_record(RESULTS, b"0000", 1, False))
    spool = tmp_path / "spool"
    down = mqtt_publisher_factory(free_port(), spool_dir=spool, spool_max_bytes=40 * record)
    for i in range(100):
        down.publish_result(b"%04d" % i)
    wait_until(lambda: down.stats()["spooled"] == 100, 5, "spooling")
    assert down.stats()["spool_dropped"] == 60
    assert down.stats()["spool_pending"] == 40
    assert down.stop(5)
    mqtt_publisher_factory(mqtt_broker.port, spool_dir=spool, spool_max_bytes=40 * record)
    got = mqtt_subscriber.wait_count(RESULTS, 40)
    assert [m.payload for m in got] == [b"%04d" % i for i in range(60, 100)]


@BOTH
def test_retained_status_is_republished_after_broker_restart(mqtt_broker, mqtt_publisher_factory):
    pub = mqtt_publisher_factory(mqtt_broker.port)
    pub.publish_status({"state": "starting"})
    pub.publish_status({"state": "running"})  # only the latest value matters
    pub.publish_model({"name": "mobilenet", "version": 3})
    assert pub.wait_connected(10)
    mqtt_broker.stop()  # a broker without persistence forgets retained messages
    mqtt_broker.start()
    wait_until(lambda: pub.stats()["reconnects"] == 1, 10, "reconnect")
    assert pub.wait_connected(10)
    topics = ["edge/dev1/status", "edge/dev1/model", "edge/dev1/available"]
    late = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, topics).start()
    try:
        status = late.wait_for("edge/dev1/status")
        assert (json.loads(status.payload), status.retain) == ({"state": "running"}, True)
        assert late.wait_for("edge/dev1/model").json() == {"name": "mobilenet", "version": 3}
        assert late.wait_for("edge/dev1/available").payload == b"online"
    finally:
        late.stop()


@BOTH
def test_qos0_results_are_delivered_in_order(mqtt_broker, mqtt_subscriber, mqtt_publisher_factory):
    pub = mqtt_publisher_factory(mqtt_broker.port, qos_results=0)
    assert pub.wait_connected(10)
    for i in range(50):
        pub.publish_result({"seq": i})
    mqtt_subscriber.wait_count(RESULTS, 50)
    assert _seqs(mqtt_subscriber) == list(range(50))
    assert pub.stats()["inflight"] == 0 and pub.stats()["published"] == 50


def test_disk_full_keeps_results_in_memory_in_order(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(durable_module, "RETRY_S", 0.2)
    real_write = os.write
    full = True

    def write(fd, data):
        if full and os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    spool = tmp_path / "spool"
    with caplog.at_level(logging.ERROR):
        down = mqtt_publisher_factory(free_port(), spool_dir=spool)
        for i in range(10):
            down.publish_result({"seq": i})
        wait_until(lambda: "disk full; keeping messages in memory" in caplog.text, 5, "error")
    assert down.stats()["spooled"] == 0 and down.stats()["queued"] == 10
    full = False  # space freed: the retry spools them, ahead of newer ones
    for i in range(10, 20):
        down.publish_result({"seq": i})
    wait_until(lambda: down.stats()["spooled"] == 20, 5, "spooling after the disk recovered")
    assert down.stop(5)
    mqtt_publisher_factory(mqtt_broker.port, spool_dir=spool)
    mqtt_subscriber.wait_count(RESULTS, 20)
    assert _seqs(mqtt_subscriber) == list(range(20))


def test_hung_broker_is_detected_by_keepalive_and_nothing_is_lost(
    mqtt_broker_factory, mqtt_publisher_factory
):
    # SIGSTOP keeps the TCP connection open but silent, like a network partition: only
    # the keepalive can tell. What was in flight is re-sent on the new connection.
    broker = mqtt_broker_factory("mosquitto", persistent=True)
    sub = MqttSubscriber(broker.host, broker.port, [RESULTS], persistent=True).start()
    try:
        pub = mqtt_publisher_factory(broker.port, keepalive=1)
        assert pub.wait_connected(10)
        for i in range(50):
            pub.publish_result({"seq": i})
        wait_until(lambda: len(sub.on(RESULTS)) == 50, 10, "first results")
        broker.pause()
        for i in range(50, 150):
            pub.publish_result({"seq": i})
            time.sleep(0.02)
        wait_until(lambda: not pub.connected, 10, "keepalive timeout")
        broker.resume()
        wait_until(lambda: set(_seqs(sub)) >= set(range(150)), 15, "all results")
        assert list(dict.fromkeys(_seqs(sub))) == list(range(150))
        assert pub.stats()["reconnects"] == 1
    finally:
        sub.stop()


def test_websocket_transport(mqtt_publisher_factory):
    pytest.importorskip("amqtt")
    ws_port = free_port()
    broker = EmbeddedBroker("127.0.0.1", 0, websocket_port=ws_port)
    broker.start()
    try:
        sub = MqttSubscriber("127.0.0.1", broker.port, [RESULTS]).start()
        pub = mqtt_publisher_factory(ws_port, transport="websockets")
        assert pub.wait_connected(10)
        for i in range(10):
            pub.publish_result({"seq": i})
        sub.wait_count(RESULTS, 10)
        assert _seqs(sub) == list(range(10))
        assert pub.stop(5)
        sub.stop()
    finally:
        broker.stop()
