"""Tier 3: the sd_notify protocol as a service manager receives it.

The test binds a real unix datagram socket and hands it to the daemon as
``$NOTIFY_SOCKET`` with ``WATCHDOG_USEC=1000000`` (ping every 0.5 s), exactly what
systemd does for ``Type=notify`` + ``WatchdogSec=1``. The camera is a 2 s clip without
loop, so it ends: from then on no frame is processed and the watchdog pings must stop,
proving there is no blind timer that would keep a stalled pipeline alive. A camera that
is down and retrying (its file not there yet) keeps the pings going, and the daemon up.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.broker import wait_until
from tests.support.clips import write_clip
from tests.support.notify import WATCHDOG_USEC
from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

DEMO = REPO / "models" / "demo"
PING_S = WATCHDOG_USEC / 2 / 1e6  # sd_watchdog_enabled(3): ping at half the timeout


def test_ready_status_watchdog_from_progress_only_and_stopping(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon, notify_socket
):
    clip = write_clip(tmp_path / "two_seconds.avi", 30, fps=15.0)
    started = time.monotonic()
    daemon = edge_daemon(
        mqtt_broker.port,
        clip,
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        env=notify_socket.env,
        camera={"loop": False},
        mqtt={"publish_every_frame": True},
    )
    sub, topics = mqtt_subscriber, daemon.topics
    wait_until(lambda: notify_socket.times("READY=1"), 20, "READY=1")
    ready_at = notify_socket.times("READY=1")[0]
    ready_wall = time.time() - (time.monotonic() - ready_at)
    first = sub.wait_for(topics.results, timeout=10).json()
    # READY=1 comes after a frame went through (and the broker is up).
    assert first["timestamp"] <= ready_wall + 0.05, (first["timestamp"], ready_wall)

    daemon.wait_log(r"camera cam0: .* ended", timeout=10)
    ended = time.monotonic()
    wait_until(
        lambda: any("cam0=ended" in s for s in notify_socket.lines("STATUS=")),
        5,
        "STATUS= line with the camera ended",
    )
    time.sleep(6 * PING_S)  # six ping intervals with nothing to process
    pings = notify_socket.times("WATCHDOG=1")
    during = [t for t in pings if t <= ended]
    after = [t for t in pings if t > ended + 0.2]
    gaps = [b - a for a, b in zip(during, during[1:])]
    frames = len(sub.on(topics.results))
    assert 25 <= frames <= 30, f"{frames} results from a 30-frame clip"
    # ~2 s of frames at one ping per 0.5 s at most:
    assert 2 <= len(during) <= 6, during
    assert min(gaps, default=PING_S) >= PING_S * 0.8, gaps
    assert after == [], f"{len(after)} watchdog pings after the last frame"
    assert daemon.alive()

    assert daemon.stop(signal.SIGTERM, timeout=10) == 0
    wait_until(lambda: notify_socket.times("STOPPING=1"), 5, "STOPPING=1")
    stopping_at = notify_socket.times("STOPPING=1")[0]
    assert stopping_at > ready_at
    statuses = notify_socket.lines("STATUS=")
    assert any("running" in s and "backend=cpu" in s for s in statuses), statuses
    assert any("cam0=streaming" in s for s in statuses), statuses
    assert notify_socket.times("READY=1") == [ready_at], "READY=1 sent more than once"
    print(
        f"sd_notify: READY=1 {ready_at - started:.2f}s after start; "
        f"{len(during)} WATCHDOG=1 while {frames} frames were processed "
        f"(gaps {min(gaps):.2f}..{max(gaps):.2f}s), {len(after)} in the "
        f"{6 * PING_S:.0f}s after the clip ended; {len(statuses)} STATUS= lines; "
        f"STOPPING=1 on SIGTERM"
    )


def test_the_watchdog_is_fed_while_the_camera_is_down_and_retrying(
    tmp_path, mqtt_broker, edge_daemon, notify_socket
):
    # A camera unplugged (here: a file not there yet) is retried with backoff; restarting
    # the daemon would not bring it back, and systemd would give up at its start limit.
    camera = tmp_path / "later.avi"
    daemon = edge_daemon(
        mqtt_broker.port,
        camera,
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        env=notify_socket.env,
        camera={"loop": False},
    )
    daemon.wait_log(r"camera cam0: .*reopening", timeout=20)
    wait_until(lambda: len(notify_socket.times("WATCHDOG=1")) >= 4, 20, "pings, camera down")
    pings = notify_socket.times("WATCHDOG=1")
    assert min(b - a for a, b in zip(pings, pings[1:])) >= PING_S * 0.8, pings
    assert daemon.alive()
    # The camera comes back: its frames feed the watchdog from then on.
    write_clip(tmp_path / "clip.avi", 30, fps=15.0).replace(camera)
    daemon.wait_log(r"camera cam0: .* ended", timeout=20)
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0


def test_a_sighup_before_ready_sends_no_early_ready(tmp_path, edge_daemon, notify_socket):
    # The broker is down: READY=1 waits for the 10 s broker grace. A SIGHUP meanwhile
    # was reloaded with RELOADING=1 + READY=1, telling systemd the service was up
    # before the broker was given its chance (and the early SIGHUP was a reload of a
    # service that systemd still saw as starting).
    daemon = edge_daemon(
        1,  # nothing listens: connections are refused
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        env=notify_socket.env,
        mqtt={"ready_without_broker": True},
    )
    daemon.wait_log(r"mqtt .*cannot connect", timeout=20)
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_log(r"reload: applied", timeout=10)
    assert "RELOADING=1" not in notify_socket.lines("RELOADING=")
    assert notify_socket.times("READY=1") == [], "READY=1 before the daemon was ready"
    wait_until(lambda: notify_socket.times("READY=1"), 20, "READY=1 after the broker grace")
    ready_at = notify_socket.times("READY=1")[0]
    daemon.send_signal(signal.SIGHUP)  # once running, a reload is reported as such
    wait_until(lambda: len(notify_socket.times("READY=1")) == 2, 10, "READY=1 after reload")
    assert [t for t in notify_socket.times("RELOADING=1") if t < ready_at] == []
    assert len(notify_socket.times("RELOADING=1")) == 1
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0


def test_the_watchdog_is_fed_with_every_camera_disabled(
    tmp_path, mqtt_broker, edge_daemon, notify_socket
):
    # Every camera `enabled = false` is a valid config (a warning: nothing captured), the
    # daemon still takes commands; but nothing fed the watchdog, so systemd killed it
    # every WatchdogSec until its start limit left the service failed.
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        env=notify_socket.env,
        camera={"enabled": False},
    )
    wait_until(lambda: notify_socket.times("READY=1"), 20, "READY=1")
    ready_at = notify_socket.times("READY=1")[0]
    wait_until(
        lambda: len([t for t in notify_socket.times("WATCHDOG=1") if t > ready_at]) >= 4,
        10,
        "WATCHDOG=1 pings with no camera enabled",
    )
    pings = notify_socket.times("WATCHDOG=1")
    assert min(b - a for a, b in zip(pings, pings[1:])) >= PING_S * 0.8, pings
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0
