"""Tier 1: sd_notify messages reach a real unix datagram socket; the watchdog is progress-driven."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import pytest

from edge_agent.daemon.sdnotify import Notifier, Watchdog, watchdog_interval
from tests.support.clock import FakeClock


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A bound datagram socket standing in for systemd; $NOTIFY_SOCKET points at it."""
    path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def nothing_queued(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5.0)
    return False


def test_ready_arrives(notify_socket):
    assert Notifier().ready() is True
    assert received(notify_socket) == "READY=1"


def test_ready_with_status(notify_socket):
    assert Notifier().ready("2 cameras, model mobilenet_v2 on usb:0")
    assert received(notify_socket) == "READY=1\nSTATUS=2 cameras, model mobilenet_v2 on usb:0"


def test_status_text_arrives_on_one_line(notify_socket):
    notifier = Notifier()
    assert notifier.status("running: 29.8 fps")
    assert received(notify_socket) == "STATUS=running: 29.8 fps"
    assert notifier.status("camera front:\nreopening")
    assert received(notify_socket) == "STATUS=camera front: reopening"


def test_stopping_and_watchdog(notify_socket):
    notifier = Notifier()
    assert notifier.stopping()
    assert received(notify_socket) == "STOPPING=1"
    assert notifier.watchdog()
    assert received(notify_socket) == "WATCHDOG=1"


def test_reloading_carries_monotonic_usec(notify_socket):
    notifier = Notifier()
    assert notifier.ready()
    assert received(notify_socket) == "READY=1"
    assert notifier.reloading(monotonic_usec=123456789)
    assert received(notify_socket) == "RELOADING=1\nMONOTONIC_USEC=123456789"

    before = time.monotonic_ns() // 1000
    assert notifier.reloading()
    after = time.monotonic_ns() // 1000
    first, second = received(notify_socket).split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert notifier.reloaded()
    assert received(notify_socket) == "READY=1"


def test_a_reload_before_ready_is_not_reported(notify_socket):
    # An early SIGHUP's RELOADING=1 + READY=1 told systemd start-up was done.
    notifier = Notifier()
    assert not notifier.reloading()
    assert not notifier.reloaded()
    assert notifier.status("starting")
    assert received(notify_socket) == "STATUS=starting"  # nothing was sent before it


def test_no_op_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert notifier.enabled is False
    assert notifier.ready() is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False


def test_abstract_socket_name(monkeypatch):
    name = f"edge-agent-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert Notifier().ready() is True
        assert received(sock) == "READY=1"


def test_vanished_socket_does_not_raise(tmp_path, monkeypatch, caplog):
    path = tmp_path / "gone.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.close()
    path.unlink()
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = Notifier()
    with caplog.at_level(logging.DEBUG, logger="edge_agent.daemon.sdnotify"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
    levels = [r.levelno for r in caplog.records]
    # One warning for the streak, then debug only: the watchdog must not flood the journal.
    assert levels == [logging.WARNING, logging.DEBUG]


def test_unsupported_address_is_ignored(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert Notifier().ready() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "me"}, None),
    ],
)
def test_watchdog_interval(env, expected):
    assert watchdog_interval(env) == expected


def test_watchdog_interval_reads_process_environment(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 4.0
    clock = FakeClock(100.0)
    assert Watchdog.from_environment(Notifier(), clock=clock).interval == 4.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert Watchdog.from_environment(Notifier()).enabled is False


def test_watchdog_pings_only_on_progress_and_rate_limited(notify_socket):
    clock = FakeClock(100.0)
    threads_before = threading.active_count()
    dog = Watchdog(Notifier(), 10.0, clock=clock)
    assert threading.active_count() == threads_before  # no timer thread
    assert nothing_queued(notify_socket)  # creating it pings nothing

    assert dog.progress() is True  # first progress pings at once
    assert received(notify_socket) == "WATCHDOG=1"
    assert dog.last_ping == 100.0

    for now in (100.0, 103.0, 109.999):
        clock.now = now
        assert dog.progress() is False
    assert nothing_queued(notify_socket)

    clock.now = 110.0
    assert dog.progress() is True
    assert received(notify_socket) == "WATCHDOG=1"
    assert nothing_queued(notify_socket)

    # A stalled pipeline makes no progress() calls: however much time passes, no ping.
    clock.now = 500.0
    assert nothing_queued(notify_socket)
    assert dog.progress() is True
    assert received(notify_socket) == "WATCHDOG=1"


def test_watchdog_failed_ping_is_retried_after_interval_not_every_frame(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "missing.sock"))
    clock = FakeClock(0.0)
    dog = Watchdog(Notifier(), 5.0, clock=clock)
    assert dog.progress() is False
    assert dog.last_ping == 0.0
    clock.now = 1.0
    assert dog.progress() is False
    assert dog.last_ping == 0.0


def test_disabled_watchdog_sends_nothing(notify_socket):
    dog = Watchdog(Notifier(), None)
    assert dog.enabled is False
    assert dog.progress() is False
    assert nothing_queued(notify_socket)


@pytest.mark.parametrize("interval", [0, -1.0])
def test_watchdog_rejects_non_positive_interval(interval):
    with pytest.raises(ValueError, match="positive"):
        Watchdog(Notifier(), interval)
