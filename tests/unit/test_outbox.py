"""The publisher's queue, retained latest values, in-flight window; settings validation."""

from __future__ import annotations

import pytest

from edge_agent.errors import ConfigError, PublishError
from edge_agent.publishing.outbox import InflightWindow, Outbox, Outgoing
from edge_agent.publishing.settings import MqttSettings, encode_payload, ssl_context
from edge_agent.publishing.spool import Position
from tests.support.clock import FakeClock


def _msg(n: int, *, durable=True, retain=False, topic="t") -> Outgoing:
    return Outgoing(topic, b"%d" % n, 1, retain, durable)


def test_outbox_is_fifo_and_drops_oldest_beyond_bound():
    box = Outbox(max_queued=3)
    assert [box.put(_msg(i)) for i in range(3)] == [None, None, None]
    assert box.put(_msg(3)) == _msg(0)
    assert [box.pop() for _ in range(4)] == [_msg(1), _msg(2), _msg(3), None]


def test_push_front_keeps_order_ahead_of_newer():
    box = Outbox(10)
    box.put(_msg(3))
    box.push_front([_msg(1), _msg(2)])
    assert [box.pop() for _ in range(3)] == [_msg(1), _msg(2), _msg(3)]


def test_retained_keeps_latest_per_topic_and_can_be_marked_again():
    box = Outbox(10)
    box.put(_msg(1, durable=False, retain=True, topic="s"))
    box.put(_msg(2, durable=False, retain=True, topic="s"))
    box.put(_msg(3, durable=False, retain=True, topic="m"))
    assert len(box) == 0  # not queued
    assert box.take_dirty() == [  # in the order marked
        _msg(2, durable=False, retain=True, topic="s"),
        _msg(3, durable=False, retain=True, topic="m"),
    ]
    assert box.take_dirty() == []
    box.mark_retained_dirty()
    assert [m.payload for m in box.take_dirty()] == [b"2", b"3"]
    box.put(_msg(4, durable=False, retain=True, topic="m"))  # marked first: sent first
    box.mark_retained_dirty()
    assert [m.payload for m in box.take_dirty()] == [b"4", b"2"]


def test_repeat_sends_the_latest_live_status_again():
    box = Outbox(10, answerable=("s",))
    assert box.repeat("s") is False  # nothing published yet
    box.put(_msg(1, durable=False, topic="s"))
    box.put(_msg(2, durable=False, topic="s"))
    assert [box.pop(), box.pop()] == [
        _msg(1, durable=False, topic="s"),
        _msg(2, durable=False, topic="s"),
    ]
    assert box.repeat("s") is True
    assert box.pop() == _msg(2, durable=False, topic="s")  # sent again, not retained


def test_repeat_marks_a_retained_status_dirty():
    box = Outbox(10, answerable=("s",))
    box.put(_msg(1, durable=False, retain=True, topic="s"))
    box.take_dirty()
    assert box.repeat("s") is True
    assert box.take_dirty() == [_msg(1, durable=False, retain=True, topic="s")]
    assert len(box) == 0


def test_a_refused_ack_releases_in_order_marked_refused():
    window = InflightWindow()
    window.add(1, _msg(1))
    window.add(2, _msg(2))
    assert window.ack(2, refused=True) == []
    released = window.ack(1)
    assert [(i.msg, i.refused) for i in released] == [(_msg(1), False), (_msg(2), True)]


def test_durable_retained_messages_are_queued():
    box = Outbox(10)
    box.put(_msg(1, durable=True, retain=True))
    assert len(box) == 1 and box.take_dirty() == []


def test_window_releases_strictly_in_send_order():
    window = InflightWindow()
    for mid in (1, 2, 3):
        window.add(mid, _msg(mid), Position(1, mid * 10) if mid < 3 else None)
    assert window.ack(2) == []  # 1 still unacknowledged
    released = window.ack(1)
    assert [(r.msg.payload, r.position) for r in released] == [
        (b"1", Position(1, 10)),
        (b"2", Position(1, 20)),
    ]
    assert window.ack(99) == []
    assert len(window) == 1


def test_window_reset_returns_unacked_live_messages_only():
    window = InflightWindow()
    window.add(1, _msg(1), Position(1, 10))  # from the spool: stays there
    window.add(2, _msg(2))
    window.add(3, _msg(3))  # acked but held behind 1: delivered, not returned
    window.add(4, _msg(4))
    window.ack(3)
    assert window.reset() == [_msg(2), _msg(4)]
    assert len(window) == 0


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"port": 0}, "mqtt.port"),
        ({"transport": "quic"}, "mqtt.transport"),
        ({"qos_results": 3}, "mqtt.qos_results"),
        ({"reconnect_min": 5, "reconnect_max": 1}, "mqtt.reconnect_min"),
        ({"keepalive": 0}, "mqtt.keepalive"),
        ({"cert_file": "/x.pem"}, "mqtt.cert_file"),
        ({"password": "secret"}, "mqtt.username"),
        ({"host": ""}, "mqtt.host"),
        ({"max_unacked_s": 0}, "mqtt.max_unacked_s"),
        ({"protocol": "4"}, "mqtt.protocol"),
        ({"max_packet_size": 100}, "mqtt.max_packet_size"),
    ],
)
def test_settings_validation(change, key):
    with pytest.raises(ConfigError) as info:
        MqttSettings(**change).validate()
    assert info.value.key == key


def test_password_is_not_in_repr():
    assert "hunter2" not in repr(MqttSettings(username="u", password="hunter2"))


def test_tls_files_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="mqtt.ca_file: file not found"):
        ssl_context(MqttSettings(tls=True, ca_file=str(tmp_path / "missing.pem")))
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="mqtt.tls: cannot load TLS files"):
        ssl_context(MqttSettings(tls=True, ca_file=str(tmp_path / "bad.pem")))
    assert ssl_context(MqttSettings()) is None


def test_encode_payload():
    assert encode_payload("t", b"\x00\x01") == b"\x00\x01"
    assert encode_payload("t", "é") == "é".encode()
    assert encode_payload("t", {"a": [1, 2.5], "b": None}) == b'{"a":[1,2.5],"b":null}'
    with pytest.raises(PublishError, match="not JSON-serializable"):
        encode_payload("t", {"score": float("nan")})
    with pytest.raises(PublishError, match="unsupported payload type int"):
        encode_payload("t", 5)


def test_window_qos0_entries_count_as_acked_but_release_in_order():
    window = InflightWindow()
    window.add(1, _msg(1), Position(1, 10))
    assert window.add(2, _msg(2), Position(1, 20), acked=True) == []  # held behind 1
    assert [r.msg.payload for r in window.ack(1)] == [b"1", b"2"]
    assert [r.msg.payload for r in window.add(3, _msg(3), acked=True)] == [b"3"]
    assert window.reset() == []


# ---- the ack window: what is held only in memory goes to disk when acks stop -------------


def _durability(tmp_path, outbox, window, max_unacked_s=2.0):
    from edge_agent.publishing.durable import Durability

    store = Durability(tmp_path / "spool", 1 << 20, max_unacked_s, outbox, window, "test")
    store.open_if_due()
    assert store.spool is not None, store.storage_error
    return store


def _produce(outbox, window, created, sent, queued):
    """``sent`` messages go in flight (mids 1..), ``queued`` more wait in the outbox."""
    for i in range(sent + queued):
        outbox.put(Outgoing("r", b"%d" % i, 1, False, True, created))
    for mid in range(1, sent + 1):
        window.add(mid, outbox.pop())


def test_overdue_results_in_flight_and_queued_are_spooled_in_order(tmp_path):
    outbox, window = Outbox(100), InflightWindow()
    store = _durability(tmp_path, outbox, window)
    _produce(outbox, window, 100.0, sent=3, queued=2)
    outbox.put(Outgoing("stats", b"s", 0, False, False, 100.0))
    assert store.unsecured() == 5
    assert store.secure_overdue(now=100.9) is None  # within max_unacked_s / 2
    assert store.pending == 0
    last = store.secure_overdue(now=101.0)  # PUBACKs stopped: spool now, in order
    assert [m.payload for m in store.read(10, None)] == [b"0", b"1", b"2", b"3", b"4"]
    assert last == store.read(3, None)[-1].position  # the replay goes on after the sent ones
    assert (store.unsecured(), store.spooled, len(outbox)) == (0, 5, 1)  # stats stay queued
    assert window.oldest_unsecured() is None and outbox.oldest_durable() is None
    # A late PUBACK commits the spooled copy, in order: nothing is replayed twice.
    for item in window.ack(1) + window.ack(2):
        assert store.released(item)
    assert [m.payload for m in store.read(10, None)] == [b"2", b"3", b"4"]


def test_prompt_acks_write_nothing(tmp_path):
    outbox, window = Outbox(100), InflightWindow()
    store = _durability(tmp_path, outbox, window)
    for n in range(50):
        _produce(outbox, window, 100.0 + n * 0.1, sent=1, queued=0)
        for item in window.ack(1):
            assert not store.released(item)
        assert store.secure_overdue(now=100.0 + n * 0.1 + 0.5) is None
    assert store.unsecured() == 0 and store.spooled == 0
    assert sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.seg")) == 0


def test_acked_but_unreleased_messages_are_not_spooled(tmp_path):
    outbox, window = Outbox(100), InflightWindow()
    store = _durability(tmp_path, outbox, window)
    _produce(outbox, window, 100.0, sent=3, queued=0)
    window.ack(2)  # the broker has it; only 1 and 3 are held only in memory
    store.secure_overdue(now=102.0)
    assert [m.payload for m in store.read(10, None)] == [b"0", b"2"]


def test_unusable_spool_is_reported_and_retried(tmp_path, monkeypatch):
    from edge_agent.publishing import durable

    blocker = tmp_path / "state"
    blocker.write_text("not a directory")  # like a read-only or broken state dir
    outbox, window = Outbox(100), InflightWindow()
    store = durable.Durability(blocker / "spool", 1 << 20, 2.0, outbox, window, "test")
    monkeypatch.setattr(durable, "RETRY_S", 0.0)
    store.open_if_due()
    assert store.spool is None and "results are not durable" in store.storage_error
    _produce(outbox, window, 100.0, sent=1, queued=1)
    assert store.secure_overdue(now=200.0) is None and len(outbox) == 1  # kept in memory
    blocker.unlink()
    store.open_if_due()
    assert store.spool is not None and store.storage_error == ""
    store.secure_overdue(now=200.0)
    assert store.pending == 2


def test_loss_ledger_bounds_what_a_crash_may_lose(tmp_path):
    from edge_agent.publishing.ledger import LossLedger

    path = tmp_path / "unsecured"
    clock = FakeClock(1000.0)
    ledger = LossLedger(path, headroom=16, clock=clock)
    assert ledger.previous == 0
    writes = counted_writes(ledger)
    for produced in range(1, 201):
        clock.now += 0.2  # 5 results a second
        ledger.update(produced, unsecured=2)  # healthy: ~2 in flight at any time
    assert 10 <= writes[0] <= 30  # one small write per ~headroom/2 results, not per result
    # A crash now: the next start reads a bound >= what was in memory.
    assert 2 <= LossLedger(path, headroom=16).previous <= 2 + 16 + 16
    ledger = LossLedger(path)
    assert ledger.previous == 0  # reported once, not again
    ledger.close(unsecured=0)
    assert LossLedger(path).previous == 0


def counted_writes(ledger) -> list[int]:
    """Count the ledger's writes (in the returned one-item list)."""
    writes = [0]
    real = ledger._write

    def counting(lease):
        writes[0] += 1
        return real(lease)

    ledger._write = counting
    return writes


def test_a_fast_stream_renews_the_lease_about_once_a_second_and_keeps_it_a_bound(tmp_path):
    """380 results a second (an Edge TPU) renewed a 128-result lease 6 times a second,
    each an fsynced write to the card; the headroom now widens instead."""
    from edge_agent.publishing.ledger import MAX_HEADROOM, MIN_RENEWAL_S, LossLedger

    path = tmp_path / "unsecured"
    clock = FakeClock(1000.0)
    ledger = LossLedger(path, clock=clock)
    writes, restored = counted_writes(ledger), 0
    seconds = 120
    for produced in range(1, 380 * seconds + 1):
        clock.now += 1 / 380
        unsecured = 3 + produced % 40  # PUBACKs trail by a few to a few dozen
        ledger.update(produced, unsecured)
        if produced % 997 == 0:  # a power cut here: the next start's bound covers it
            assert LossLedger(path).previous >= unsecured
            ledger._write(ledger._lease)  # (reading it reset the file: put it back)
            restored += 1
    renewals = writes[0] - restored
    assert renewals <= seconds / MIN_RENEWAL_S + 10, renewals  # 712 at a fixed headroom
    assert ledger.headroom <= MAX_HEADROOM
    for produced in range(380 * seconds + 1, 380 * seconds + 1501):
        clock.now += 0.25  # the stream slows to 4 a second: the headroom narrows, renewal
        ledger.update(produced, unsecured=2)  # by renewal (a looser bound meanwhile)
    assert ledger.headroom == 128
