"""Chaos: the retained counts a killed run leaves, when the next run has events off.

A run killed (SIGKILL, a power cut, the watchdog) with an object in view leaves its
retained count at 1 on the broker. The next start resets every count topic an earlier
run made non-zero ({state_dir}/counts.json), and must do so with ``events.enabled =
false`` too: that run publishes no counts of its own, so a 1 left then would read 1 for
good to every consumer of the topic.
"""

from __future__ import annotations

import signal

import pytest

from tests.support.broker import wait_until
from tests.support.chaos import DEMO

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def test_counts_a_killed_run_left_read_0_when_the_next_run_has_events_off(
    mqtt_broker, mqtt_subscriber, edge_daemon
):
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        mqtt={"publish_results": "off"},
    )
    green = daemon.topics.count("cam0", "green")
    mqtt_subscriber.wait_for(green, lambda m: m.payload == b"1", timeout=30)
    daemon.stop(signal.SIGKILL, timeout=10)
    daemon.kill_group()
    assert edge_daemon.retained(mqtt_broker, green).payload == b"1"  # the killed run's
    daemon.proc = None
    daemon.write_config(events={"enabled": False})
    daemon.start()
    daemon.wait_log(r"camera cam0: streaming", timeout=45)
    wait_until(lambda: edge_daemon.retained(mqtt_broker, green).payload == b"0", 20, f"{green} 0")
    assert daemon.stop(timeout=15) == 0
