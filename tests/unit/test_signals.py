"""Tier 1: real signals sent to this process are queued by the handlers and drained by
the main loop as typed requests; no thread is started; handlers are restored."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from edge_agent.daemon.signals import Request, SignalQueue
from edge_agent.errors import EdgeAgentError

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@pytest.fixture(autouse=True)
def keep_handlers():
    """Whatever a test does, put the process's handlers back afterwards."""
    saved = {s: signal.getsignal(s) for s in HANDLED}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_is_drained_as_stop(signum):
    threads = threading.active_count()
    with SignalQueue() as signals:
        assert threading.active_count() == threads  # no relay thread
        assert not signals.stop_requested
        os.kill(os.getpid(), signum)  # SIGINT must not raise KeyboardInterrupt
        assert signals.stop_requested  # counted by the handler itself
        assert signals.stop_count == 1
        assert signals.wait(5) is Request.STOP
        assert signals.wait(0) is Request.STOP  # sticky once drained


def test_second_stop_signal_is_counted():
    with SignalQueue() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.wait(5) is Request.STOP
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.stop_count == 2
        assert signals.wait(5) is Request.STOP


def test_sighup_requests_one_reload():
    with SignalQueue() as signals:
        assert signals.wait(0.01) is None
        os.kill(os.getpid(), signal.SIGHUP)
        assert signals.wait(5) is Request.RELOAD
        assert not signals.stop_requested
        assert signals.wait(0.01) is None  # drained


def test_a_burst_of_reloads_is_one_and_a_stop_wins():
    with SignalQueue() as signals:
        for _ in range(5):
            os.kill(os.getpid(), signal.SIGHUP)
        assert signals.wait(5) is Request.RELOAD
        assert signals.wait(0.01) is None
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.wait(5) is Request.STOP


def test_signals_before_the_first_wait_are_kept():
    """The handlers go in before the config is read; what arrives meanwhile waits."""
    with SignalQueue() as signals:
        os.kill(os.getpid(), signal.SIGHUP)
        assert signals.wait(0) is Request.RELOAD


def test_restore_puts_previous_handlers_back():
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    signal.signal(signal.SIGHUP, previous)
    before = {s: signal.getsignal(s) for s in HANDLED}
    signals = SignalQueue()
    signals.install()
    assert signals.installed
    assert all(signal.getsignal(s) == signals._handle for s in HANDLED)
    signals.restore()
    assert not signals.installed
    assert {s: signal.getsignal(s) for s in HANDLED} == before

    # After restore the previous handler gets the signal, the queue does not.
    os.kill(os.getpid(), signal.SIGHUP)
    assert calls == [signal.SIGHUP]
    assert signals.wait(0.01) is None

    signals.restore()  # a second restore is harmless


def test_install_is_idempotent_and_reinstallable():
    signals = SignalQueue()
    signals.install()
    signals.install()
    signals.restore()
    assert signal.getsignal(signal.SIGTERM) != signals._handle
    signals.install()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert signals.wait(5) is Request.RELOAD
    finally:
        signals.restore()


def test_custom_signal_sets():
    with SignalQueue(stop_signals=[signal.SIGUSR1], reload_signals=[signal.SIGUSR2]) as signals:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert signals.wait(5) is Request.RELOAD
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.wait(5) is Request.STOP
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_overlapping_signal_sets_are_rejected():
    with pytest.raises(ValueError, match="both"):
        SignalQueue(stop_signals=[signal.SIGTERM], reload_signals=[signal.SIGTERM])


@pytest.mark.parametrize("action", ["install", "restore"])
def test_only_the_main_thread_may_install_or_restore(action):
    signals = SignalQueue()
    errors: list[BaseException] = []

    def run():
        try:
            getattr(signals, action)()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    thread = threading.Thread(target=run, name="not-main")
    thread.start()
    thread.join(timeout=10)
    assert len(errors) == 1
    assert isinstance(errors[0], EdgeAgentError)
    assert f"SignalQueue.{action}() must be called from the main thread" in str(errors[0])
    assert "'not-main'" in str(errors[0])
