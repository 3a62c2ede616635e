"""Fault tier: the daemon's first seconds.

* A SIGHUP that arrives while the daemon is still reading its config is kept and applied
  as a reload once it runs, instead of killing it (the default action of SIGHUP). The
  config is a FIFO, so the test holds the daemon inside ``load_config`` for as long as it
  likes and checks that the handler is already installed there.
* A SIGTERM while the config is read (a FIFO nobody feeds, at start or on a reload)
  stops the daemon at once, exit 0, instead of waiting for systemd's SIGKILL.
* A SIGTERM while the model loads (a hung Edge TPU, before READY) stops the daemon
  within seconds, not after ``inference.load_timeout``.
* A camera that cannot open does not hold the first retained status back: it shows up,
  with the camera reconnecting, within seconds of the start.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.broker import wait_until
from tests.support.chaos import figure
from tests.support.daemon import agent_command, to_toml
from tests.support.fake_tpu import write_state
from tests.support.paths import REPO, fixture_model
from tests.support.tpu_plugin import fake_tpu_env

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

DEMO = REPO / "models" / "demo"


def catches(pid: int, signum: int) -> bool:
    """True when the process has a handler installed for ``signum`` (/proc SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


def feed_fifo(path: Path, text: str, timeout: float) -> None:
    """Write ``text`` into the FIFO once its reader has opened it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise AssertionError(f"nobody opened {path} for reading in {timeout}s") from exc
            time.sleep(0.02)
    try:
        os.set_blocking(fd, True)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def test_sighup_while_the_config_is_read_is_kept_not_fatal(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        start=False,
    )
    fifo = daemon.dir / "config.fifo"
    os.mkfifo(fifo, 0o600)
    daemon.start(agent_command("run", "--config", str(fifo)))
    started = time.monotonic()
    # The daemon now blocks opening the FIFO: it has not read a byte of its config.
    wait_until(lambda: catches(daemon.pid, signal.SIGHUP), 30, "SIGHUP handler installed")
    installed_after = time.monotonic() - started
    assert daemon.alive()
    daemon.send_signal(signal.SIGHUP)
    text = to_toml(daemon.sections)
    feed_fifo(fifo, text, timeout=30)  # start-up reads the config
    mqtt_subscriber.wait_count(daemon.topics.results, 5, timeout=45)
    # The queued SIGHUP is a reload once running: it opens the FIFO again.
    feed_fifo(fifo, text, timeout=30)
    daemon.wait_log(r"reload: applied", timeout=30)
    assert daemon.alive()
    assert daemon.stop(timeout=15) == 0
    figure("early_sighup", handler_installed_s=installed_after, survived=1)


def test_first_status_does_not_wait_for_a_missing_camera(mqtt_broker, mqtt_subscriber, edge_daemon):
    daemon = edge_daemon(
        mqtt_broker.port,
        "/dev/video9",  # no such device: the camera keeps reconnecting
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
    )
    started = time.monotonic()
    msg = mqtt_subscriber.wait_for(
        daemon.topics.status,
        lambda m: m.json()["cameras"].get("cam0", {}).get("state") == "reconnecting",
        timeout=25,
    )
    elapsed = time.monotonic() - started
    status = msg.json()
    assert status["state"] == "starting"  # READY waits for frames; the status does not
    assert elapsed < 10.0, f"first status with the camera's state after {elapsed:.1f}s"
    assert daemon.stop(timeout=15) == 0
    figure("missing_camera_status", first_status_s=elapsed)


def test_sigterm_while_the_config_is_read_stops_at_once(mqtt_broker, edge_daemon):
    # The config FIFO is never fed: the daemon blocks opening it. SIGTERM was queued
    # for a main loop that never came, so `systemctl stop` ended in a SIGKILL after
    # TimeoutStopSec (20 s).
    daemon = edge_daemon(
        mqtt_broker.port, DEMO / "clip.avi", DEMO / "color_blobs.tflite", start=False
    )
    fifo = daemon.dir / "config.fifo"
    os.mkfifo(fifo, 0o600)
    daemon.start(agent_command("run", "--config", str(fifo)))
    wait_until(lambda: catches(daemon.pid, signal.SIGTERM), 30, "SIGTERM handler installed")
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0
    assert "Traceback" not in daemon.log()
    daemon.wait_log(r"stopped while reading the config", timeout=1)


def test_sigterm_during_a_reload_that_blocks_stops_the_daemon(
    mqtt_broker, mqtt_subscriber, edge_daemon
):
    # A SIGHUP reopens the config FIFO, which nobody feeds again: the main loop blocked
    # there and a SIGTERM was never acted on (SIGKILL after TimeoutStopSec, results
    # held in memory lost).
    daemon = edge_daemon(
        mqtt_broker.port, DEMO / "clip.avi", DEMO / "color_blobs.tflite", start=False
    )
    fifo = daemon.dir / "config.fifo"
    os.mkfifo(fifo, 0o600)
    daemon.start(agent_command("run", "--config", str(fifo)))
    feed_fifo(fifo, to_toml(daemon.sections), timeout=30)
    mqtt_subscriber.wait_count(daemon.topics.results, 3, timeout=45)
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_log(r"received SIGHUP: reload requested", timeout=10)
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0
    daemon.wait_log(r"stopped while reading the config", timeout=1)
    assert "Traceback" not in daemon.log()


def test_sigterm_while_the_model_loads_stops_before_the_load_timeout(
    tmp_path, mqtt_broker, edge_daemon
):
    # The warm-up invoke hangs on the (fake) Edge TPU: the first load waits for
    # inference.load_timeout (60 s) and then tries the CPU. SIGTERM was only queued
    # meanwhile, so `systemctl stop` during start-up ended in a SIGKILL at 20 s.
    state = tmp_path / "tpu.json"
    write_state(state, devices=["usb"], invoke="hang")
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        fixture_model("color_uint8_edgetpu.tflite"),
        fixture_model("color_labels.txt"),
        env=fake_tpu_env(state),
        inference={"load_timeout": 60.0},
    )
    wait_until(lambda: len(daemon.worker_pids()) > 0, 30, "a worker loading the model")
    workers = daemon.worker_pids()
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0
    assert "Traceback" not in daemon.log()
    wait_until(lambda: not any(map(running, workers)), 5, "the loading worker gone")


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"
