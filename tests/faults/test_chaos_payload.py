"""Chaos: a 100 MB payload on the device's command topic leaves its memory alone.

The daemon runs the demo model and clip against a real mosquitto (no broker-side
limit: the worst case). An operator publishes one 100 MB payload on
``{prefix}/{device}/cmd/model/update``, then a small command. With MQTT 5 (``auto``
against mosquitto) the broker never forwards the oversized packet (the device declared
``max_packet_size``); with MQTT 3.1.1 the device refuses it after reading its header
and reconnects. Either way the daemon's RSS stays within 10 MB of where it was, and
the small command after it still arrives.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.support.broker import HOST, MOSQUITTO
from tests.support.chaos import DEMO, figure, running_daemon

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(180),
    pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (apt-get install mosquitto)"),
]

BIG = 100 * 1024 * 1024
MB = 1024 * 1024


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    rss, hwm = (
        int(re.search(rf"{k}:\s+(\d+) kB", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")
    )
    return rss, hwm


def commands(daemon, mark: int) -> int:
    """Commands the daemon logged receiving since log offset ``mark``."""
    return len(re.findall(r"command model/update from", daemon.log()[mark:]))


def settled_rss(pid: int, seconds: float = 2.0) -> int:
    """The largest RSS seen over ``seconds`` (frames come and go)."""
    end, top = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        top = max(top, memory(pid)[0])
        time.sleep(0.1)
    return top


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_100mb_command_payload_leaves_rss_alone(tmp_path, mqtt_broker_factory, protocol):
    broker = mqtt_broker_factory("mosquitto")
    mqtt_overrides = {"publish_every_frame": True, "reconnect_min": 0.2, "reconnect_max": 1.0}
    if protocol != "auto":
        mqtt_overrides["protocol"] = protocol
    with running_daemon(
        tmp_path / "daemon",
        broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        mqtt=mqtt_overrides,
    ) as daemon:
        daemon.wait_log(r"mqtt \S+: connected", timeout=30)
        settled_rss(daemon.pid, 5.0)  # warm-up: worker, camera, buffers reach steady state
        before = settled_rss(daemon.pid)
        _, hwm_before = memory(daemon.pid)
        op = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator")
        op.connect(HOST, broker.port, 60)
        op.loop_start()
        try:
            topic = f"{daemon.topics.base}/cmd/model/update"
            mark = len(daemon.log())
            op.publish(topic, b"x" * BIG, qos=1).wait_for_publish(60)
            if protocol == "3.1.1":  # refused on the device: read in pieces and discarded
                pattern = r"discarded an incoming .*exceeds mqtt.max_packet_size"
                daemon.wait_log(pattern, timeout=30, after=mark)
            sent, deadline = 0, time.monotonic() + 30
            while not commands(daemon, mark) and time.monotonic() < deadline:
                # Until the command subscription takes it (the link stays up).
                op.publish(topic, b"{}", qos=1).wait_for_publish(10)
                sent += 1
                until = time.monotonic() + 1.0
                while not commands(daemon, mark) and time.monotonic() < until:
                    time.sleep(0.05)
            seen = commands(daemon, mark)
        finally:
            op.loop_stop()
            op.disconnect()
        after = settled_rss(daemon.pid, 4.0)  # a measurement window, not a wait
        _, hwm_after = memory(daemon.pid)
        # The link survived the discarded packet: no reconnect after the first connect.
        assert len(re.findall(r"mqtt \S+: connected", daemon.log())) == 1, daemon.log()
        assert daemon.alive()
        assert daemon.stop(timeout=15) == 0
    figure(
        f"command_payload_100mb_{protocol.replace('.', '')}",
        rss_before_mb=before / MB,
        rss_after_mb=after / MB,
        peak_growth_mb=(hwm_after - hwm_before) / MB,
        small_sent=sent,
        commands_seen=seen,
    )
    assert 1 <= seen <= sent, "the 100 MB payload reached the command handler"
    assert after - before <= 10 * MB, f"RSS grew by {(after - before) / MB:.1f} MB"
    assert hwm_after - hwm_before <= 10 * MB, "a peak: the payload was buffered"
