"""Tier 1: real signals sent to this process set the stop/reload flags; handlers are restored."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from edge_agent.daemon.signals import SignalFlags
from edge_agent.errors import EdgeAgentError

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@pytest.fixture(autouse=True)
def keep_handlers():
    """Whatever a test does, put the process's handlers back afterwards."""
    saved = {s: signal.getsignal(s) for s in HANDLED}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def relay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "edge-agent-signals"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_sets_flag_and_event(signum):
    with SignalFlags() as flags:
        assert not flags.stop_requested
        assert not flags.stop_event.is_set()
        os.kill(os.getpid(), signum)  # SIGINT must not raise KeyboardInterrupt
        assert flags.stop_event.wait(5)
        assert flags.stop_requested
        assert flags.stop_count == 1
        assert flags.last_signal == signum
        assert flags.reload_requested() is False


def test_second_stop_signal_is_counted():
    with SignalFlags() as flags:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flags.stop_event.wait(5)
        os.kill(os.getpid(), signal.SIGINT)
        assert flags.wait(5)
        assert flags.stop_count == 2


def test_sighup_requests_reload_once():
    with SignalFlags() as flags:
        assert flags.wait(0.01) is False
        os.kill(os.getpid(), signal.SIGHUP)
        assert flags.wait(5) is True
        assert not flags.stop_requested
        assert flags.last_signal == signal.SIGHUP
        assert flags.reload_requested() is True
        assert flags.reload_requested() is False  # cleared by the first call


def test_reload_signals_before_consumption_coalesce():
    with SignalFlags() as flags:
        os.kill(os.getpid(), signal.SIGHUP)
        assert flags.wait(5)
        os.kill(os.getpid(), signal.SIGHUP)
        assert flags.wait(5)
        assert flags.reload_requested() is True
        assert flags.reload_requested() is False
        os.kill(os.getpid(), signal.SIGHUP)  # a new one after consumption counts again
        assert flags.wait(5)
        assert flags.reload_requested() is True


def test_wait_wakes_a_thread_waiting_on_stop_event():
    woke = threading.Event()

    def worker(event):
        if event.wait(10):
            woke.set()

    with SignalFlags() as flags:
        thread = threading.Thread(target=worker, args=(flags.stop_event,))
        thread.start()
        os.kill(os.getpid(), signal.SIGTERM)
        thread.join(timeout=10)
        assert woke.is_set()


def test_request_stop_without_a_signal():
    flags = SignalFlags()
    flags.request_stop()
    assert flags.stop_requested
    assert flags.stop_event.is_set()
    assert flags.stop_count == 0
    assert flags.wait(0) is True


def test_restore_puts_previous_handlers_back_and_joins_relay():
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    signal.signal(signal.SIGHUP, previous)
    before = {s: signal.getsignal(s) for s in HANDLED}
    flags = SignalFlags()
    flags.install()
    assert flags.installed
    assert all(signal.getsignal(s) == flags._handle for s in HANDLED)
    assert len(relay_threads()) == 1
    flags.restore()
    assert not flags.installed
    assert {s: signal.getsignal(s) for s in HANDLED} == before
    assert relay_threads() == []

    # After restore the previous handler gets the signal, the flags do not.
    os.kill(os.getpid(), signal.SIGHUP)
    assert calls == [signal.SIGHUP]
    assert flags.reload_requested() is False

    flags.restore()  # a second restore is harmless


def test_install_is_idempotent_and_reinstallable():
    flags = SignalFlags()
    flags.install()
    flags.install()
    assert len(relay_threads()) == 1
    flags.restore()
    assert signal.getsignal(signal.SIGTERM) != flags._handle
    flags.install()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert flags.wait(5)
        assert flags.reload_requested()
    finally:
        flags.restore()
    assert relay_threads() == []


def test_custom_signal_sets():
    with SignalFlags(stop_signals=[signal.SIGUSR1], reload_signals=[signal.SIGUSR2]) as flags:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert flags.wait(5)
        assert flags.reload_requested()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert flags.stop_event.wait(5)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_overlapping_signal_sets_are_rejected():
    with pytest.raises(ValueError, match="both"):
        SignalFlags(stop_signals=[signal.SIGTERM], reload_signals=[signal.SIGTERM])


@pytest.mark.parametrize("action", ["install", "restore"])
def test_only_the_main_thread_may_install_or_restore(action):
    flags = SignalFlags()
    errors: list[BaseException] = []

    def run():
        try:
            getattr(flags, action)()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    thread = threading.Thread(target=run, name="not-main")
    thread.start()
    thread.join(timeout=10)
    assert len(errors) == 1
    assert isinstance(errors[0], EdgeAgentError)
    assert f"SignalFlags.{action}() must be called from the main thread" in str(errors[0])
    assert "'not-main'" in str(errors[0])
    assert signal.getsignal(signal.SIGTERM) != flags._handle
