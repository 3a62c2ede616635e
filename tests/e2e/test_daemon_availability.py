"""Tier 3: ``available`` and the retained status through a clean stop and a crash.

SIGTERM: ``online`` then ``offline`` published by the daemon itself, exit code 0 within
seconds, and the retained status left at ``stopping``. SIGKILL: nobody says goodbye, so
the broker publishes the last will (retained ``offline``) when the connection dies.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.broker import wait_until
from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

DEMO = REPO / "models" / "demo"
KEEPALIVE = 5


def demo_daemon(edge_daemon, broker):
    """The demo model on the demo clip, keepalive 5 s."""
    return edge_daemon(
        broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        mqtt={"keepalive": KEEPALIVE},
    )


def group_gone(pgid: int) -> bool:
    """True when no process is left in the process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_publishes_offline_and_stopping_status(mqtt_broker, mqtt_subscriber, edge_daemon):
    daemon = demo_daemon(edge_daemon, mqtt_broker)
    topics = daemon.topics
    mqtt_subscriber.wait_for(topics.available, lambda m: m.payload == b"online", timeout=20)
    mqtt_subscriber.wait_count(topics.results, 5, timeout=20)
    running = mqtt_subscriber.wait_for(
        topics.status, lambda m: m.json()["state"] == "running", timeout=10
    ).json()
    assert running["backend"] == "cpu" and running["broker_connected"] is True

    t0 = time.monotonic()
    code = daemon.stop(signal.SIGTERM, timeout=10)
    took = time.monotonic() - t0
    assert code == 0, daemon.log_tail()
    assert took < 5.0, f"SIGTERM took {took:.1f}s"
    assert "Traceback" not in daemon.log()

    assert [m.payload for m in mqtt_subscriber.on(topics.available)] == [b"online", b"offline"]
    last_status = mqtt_subscriber.on(topics.status)[-1].json()
    assert last_status["state"] == "stopped"
    assert last_status["cameras"]["cam0"]["state"] == "stopped"
    # What a dashboard connecting later sees:
    assert edge_daemon.retained(mqtt_broker, topics.available).payload == b"offline"
    status = edge_daemon.retained(mqtt_broker, topics.status).json()
    assert status["state"] == "stopped" and status["device_id"] == "e2e-dev"
    pgid = daemon.pid
    wait_until(lambda: group_gone(pgid), 5.0, "forkserver and worker exit after SIGTERM")
    print(f"SIGTERM -> exit 0 in {took:.2f}s")


def test_sigkill_leaves_the_last_will(mqtt_broker, mqtt_subscriber, edge_daemon):
    daemon = demo_daemon(edge_daemon, mqtt_broker)
    topics = daemon.topics
    mqtt_subscriber.wait_for(topics.available, lambda m: m.payload == b"online", timeout=20)
    mqtt_subscriber.wait_count(topics.results, 5, timeout=20)
    mqtt_subscriber.wait_for(topics.status, lambda m: m.json()["state"] == "running", timeout=10)

    t0 = time.monotonic()
    assert daemon.stop(signal.SIGKILL, timeout=5) == -signal.SIGKILL
    # The broker sends the will when it notices the dead connection: at once when the
    # kernel closes the socket, at the latest after 1.5 keepalives without a packet.
    mqtt_subscriber.wait_for(
        topics.available, lambda m: m.payload == b"offline", timeout=KEEPALIVE * 1.5 + 3
    )
    took = time.monotonic() - t0
    assert [m.payload for m in mqtt_subscriber.on(topics.available)] == [b"online", b"offline"]
    assert edge_daemon.retained(mqtt_broker, topics.available).payload == b"offline"
    # No goodbye was said: the retained status still shows the daemon running.
    assert edge_daemon.retained(mqtt_broker, topics.status).json()["state"] == "running"
    # The worker and forkserver notice the parent's death and exit on their own.
    pgid = daemon.pid
    wait_until(lambda: group_gone(pgid), 10.0, "orphaned worker/forkserver exit after SIGKILL")
    print(f"SIGKILL -> last will 'offline' after {took:.2f}s")
