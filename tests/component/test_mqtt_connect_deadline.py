"""A connect that hangs never holds results in memory or blocks stop().

The broker's name resolution stalls (glibc with two dead name servers waits ~20 s;
simulated by patching ``socket.getaddrinfo`` in this process), or a TLS endpoint takes
the TCP connection and never answers. Meanwhile results are spooled within
``max_unacked_s``, the loss ledger stays honest, ``stop()`` keeps its deadline, and once
the name resolves again everything is delivered, in order. The TLS host name check still
uses the broker's name although the device connects to the address it resolved itself.
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from edge_agent.publishing.connector import MAX_STUCK
from tests.support.broker import MOSQUITTO, MqttSubscriber, wait_until
from tests.support.tls import OTHER_HOST, make_pki

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")

RESULTS = "edge/dev1/results"
STALLED = "broker.stalled.test"  # resolves to 127.0.0.1 once the stall ends
MAX_UNACKED_S = 2.0
STALL_S = 10.0


class StalledResolver:
    """``socket.getaddrinfo`` that holds names of ours until released (at most STALL_S)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.release = threading.Event()
        self.calls = threading.Semaphore(0)
        self.stuck = 0  # lookups of ours held right now
        self._lock = threading.Lock()
        self._real = socket.getaddrinfo

    def __call__(self, host, port, *args, **kwargs):
        if host in self.names:
            with self._lock:
                self.stuck += 1
            self.calls.release()
            self.release.wait(STALL_S)
            with self._lock:
                self.stuck -= 1
            host = "127.0.0.1"
        return self._real(host, port, *args, **kwargs)


@pytest.fixture
def resolver(monkeypatch):
    stalled = StalledResolver((STALLED, OTHER_HOST))
    monkeypatch.setattr(socket, "getaddrinfo", stalled)
    yield stalled
    stalled.release.set()  # abandoned connector threads end


@pytest.fixture
def silent_endpoint():
    """A listening socket that completes TCP (the kernel does) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def _publish_and_expect_spooled(pub, count: int) -> None:
    for i in range(count):
        pub.publish_result({"seq": i})
    # The README's bound: no result is held only in memory longer than max_unacked_s.
    wait_until(lambda: pub.stats()["spooled"] == count, MAX_UNACKED_S, "results spooled")
    assert pub.stats()["queued"] == 0 and not pub.connected


def test_results_are_spooled_and_stop_keeps_its_deadline_while_the_name_does_not_resolve(
    mqtt_broker, mqtt_publisher_factory, resolver, tmp_path
):
    spool = tmp_path / "spool"
    pub = mqtt_publisher_factory(
        mqtt_broker.port, spool_dir=spool, host=STALLED, max_unacked_s=MAX_UNACKED_S
    )
    assert resolver.calls.acquire(timeout=10)  # the first attempt is resolving
    _publish_and_expect_spooled(pub, 30)
    assert pub.stop(5.0)  # the connector stuck in getaddrinfo is abandoned, not joined
    assert pub.stats()["spool_pending"] == 30
    # The name resolves again: a restart on the same spool delivers all, in order.
    resolver.release.set()
    sub = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [RESULTS]).start()
    try:
        again = mqtt_publisher_factory(mqtt_broker.port, spool_dir=spool, host=STALLED)
        sub.wait_count(RESULTS, 30)
        assert [m.json()["seq"] for m in sub.on(RESULTS)] == list(range(30))
        assert again.durability()["possibly_lost_last_run"] == 0
    finally:
        sub.stop()


def test_everything_is_delivered_once_the_stalled_name_resolves(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory, resolver
):
    pub = mqtt_publisher_factory(mqtt_broker.port, host=STALLED, max_unacked_s=MAX_UNACKED_S)
    assert resolver.calls.acquire(timeout=10)
    _publish_and_expect_spooled(pub, 30)
    resolver.release.set()
    assert pub.wait_connected(10)
    for i in range(30, 40):
        pub.publish_result({"seq": i})
    mqtt_subscriber.wait_count(RESULTS, 40)
    assert [m.json()["seq"] for m in mqtt_subscriber.on(RESULTS)] == list(range(40))


def test_lookups_that_never_return_leave_a_bounded_number_of_threads_behind(
    mqtt_broker, mqtt_publisher_factory, resolver, caplog
):
    caplog.set_level(logging.INFO, logger="edge_agent.publishing.connector")
    # Each attempt is abandoned after 0.3 s and the next is due 0.1-0.5 s later: without a
    # bound, one more thread would hang in getaddrinfo every half second.
    pub = mqtt_publisher_factory(mqtt_broker.port, host=STALLED, connect_timeout=0.3)
    wait_until(lambda: "the next one starts when one" in caplog.text, 10, "attempts held back")
    assert resolver.stuck == MAX_STUCK
    resolver.release.set()  # the name servers answer again: the held-back attempt starts
    assert pub.wait_connected(10)
    assert "a stuck connection attempt returned; connecting" in caplog.text


def test_a_silent_tls_endpoint_holds_nothing_in_memory_and_stop_keeps_its_deadline(
    silent_endpoint, mqtt_publisher_factory, tmp_path
):
    pki = make_pki(tmp_path / "pki")
    pub = mqtt_publisher_factory(
        silent_endpoint,
        tls=True,
        ca_file=str(pki.ca),
        max_unacked_s=MAX_UNACKED_S,
        connect_timeout=10.0,  # the handshake would block this long in the publisher thread
    )
    _publish_and_expect_spooled(pub, 30)
    assert pub.stop(5.0)  # the handshake is cut short: its socket is shut down
    assert pub.stats()["spool_pending"] == 30


def test_an_attempt_stuck_in_the_handshake_fails_at_the_connect_timeout(
    silent_endpoint, mqtt_publisher_factory, tmp_path, caplog
):
    pki = make_pki(tmp_path / "pki")
    pub = mqtt_publisher_factory(
        silent_endpoint, tls=True, ca_file=str(pki.ca), connect_timeout=0.5
    )
    wait_until(lambda: pub.stats()["connect_failures"] >= 2, 10, "two timed-out attempts")
    assert "no connection within 0.5s (TLS handshake and CONNECT)" in caplog.text


def _tls_broker(factory, pki, cert):
    return factory("mosquitto", tls={"cafile": pki.ca, "certfile": cert.cert, "keyfile": cert.key})


def test_the_tls_host_name_check_uses_the_name_not_the_resolved_address(
    mqtt_broker_factory, mqtt_publisher_factory, resolver, tmp_path, caplog
):
    resolver.release.set()  # OTHER_HOST resolves to 127.0.0.1 at once
    pki = make_pki(tmp_path / "pki")
    # A certificate for OTHER_HOST only (not 127.0.0.1): accepted for that name.
    named = _tls_broker(mqtt_broker_factory, pki, pki.wrong_host)
    pub = mqtt_publisher_factory(named.port, host=OTHER_HOST, tls=True, ca_file=str(pki.ca))
    assert pub.wait_connected(10)
    # A certificate for localhost/127.0.0.1 only: refused for OTHER_HOST, although the
    # device connects to 127.0.0.1.
    local = _tls_broker(mqtt_broker_factory, pki, pki.server)
    strict = mqtt_publisher_factory(
        local.port, device="dev2", host=OTHER_HOST, tls=True, ca_file=str(pki.ca)
    )
    wait_until(lambda: strict.stats()["connect_failures"] >= 1, 10, "a refused attempt")
    assert not strict.connected
    assert f"Hostname mismatch, certificate is not valid for '{OTHER_HOST}'" in caplog.text


def test_stuck_lookups_of_some_brokers_do_not_hold_back_the_others(
    mqtt_broker, mqtt_publisher_factory, resolver
):
    # Two broker names whose lookups hang, then an address: the device fails over to the
    # address while both lookups still hang (before: no attempt at all until one returned).
    port = mqtt_broker.port
    hosts = (f"{STALLED}:{port}", f"{OTHER_HOST}:{port}", f"127.0.0.1:{port}")
    pub = mqtt_publisher_factory(port, hosts=hosts, connect_timeout=0.3)
    assert pub.wait_connected(STALL_S / 2)
    assert resolver.stuck == 2  # both lookups still hang: the address was not held back
