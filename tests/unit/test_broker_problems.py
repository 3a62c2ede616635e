"""What the broker link reports: refused publishes, oversized packets discarded, and
connections the broker closes right after accepting them."""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.publishing import reconnect
from edge_agent.publishing.packet_bound import BrokerLimits, PacketHead, publish_head
from edge_agent.publishing.reconnect import Reconnects
from edge_agent.publishing.refusals import LOG_EVERY_S, BrokerProblems
from edge_agent.publishing.settings import MqttSettings
from tests.support.clock import FakeClock


def test_refused_publishes_are_counted_and_logged_once_per_topic(caplog):
    clock = FakeClock(100.0)
    problems = BrokerProblems("b:1883", clock)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            problems.refused_publish("edge/d/results", "Not authorized")
        problems.refused_publish("edge/d/events", "Not authorized")
        clock.now += LOG_EVERY_S
        problems.refused_publish("edge/d/results", "Not authorized")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "refused 1 publish(es) to edge/d/results: Not authorized" in lines[0]
    assert "edge/d/events" in lines[1]
    assert "refused 3 publish(es) to edge/d/results" in lines[2]  # 2 unlogged + this one
    assert problems.refused == 5
    assert "edge/d/results: Not authorized" in problems.error


def test_an_oversized_retained_message_says_how_to_clear_it():
    problems = BrokerProblems("b:1883")
    problems.oversized_packet("edge/d/cmd/junk", 2_000_000, 65536, True)
    assert problems.oversized == 1
    assert "edge/d/cmd/junk" in problems.error
    assert "publishing an empty retained message to edge/d/cmd/junk" in problems.error


def test_publish_head_reads_topic_qos_and_packet_id():
    head = (5).to_bytes(2, "big") + b"a/b/c" + (513).to_bytes(2, "big") + b"payload"
    assert publish_head(0x33, head) == PacketHead("a/b/c", 1, 513, True)
    assert publish_head(0x30, head[:7]) == PacketHead("a/b/c", 0, 0, False)
    assert publish_head(0x32, head[:7]) is None  # QoS 1 but the packet id is not there yet
    assert publish_head(0x90, head) is None  # not a PUBLISH


def test_a_connection_closed_right_after_connack_does_not_reset_the_backoff(monkeypatch):
    clock = FakeClock(100.0)
    monkeypatch.setattr(reconnect.time, "monotonic", clock)
    plan = Reconnects(MqttSettings(host="a", reconnect_min=1, reconnect_max=60, protocol="5"))
    delays = []
    for _ in range(4):
        plan.connected()
        plan.lost("connection lost")
        delays.append(plan.next_attempt - clock.now)
    # Doubling (with jitter in [d/2, d]) instead of reconnect_min every time.
    assert delays[3] > 4 and plan.short_lived == 4
    plan.connected()
    clock.now += reconnect.STABLE_S
    plan.lost("connection lost")
    assert plan.next_attempt - clock.now <= 1 and plan.short_lived == 0


def test_short_lived_connections_hint_at_a_client_id_clash(monkeypatch, caplog):
    monkeypatch.setattr(reconnect.time, "monotonic", FakeClock(100.0))
    plan = Reconnects(MqttSettings(host="a", client_id="cam-7", protocol="5"))
    hints = []
    with caplog.at_level(logging.WARNING):
        for _ in range(reconnect.SHORT_LIVED_HINT + 1):
            plan.connected()
            hints.append(plan.lost("Session taken over"))
    assert hints[: reconnect.SHORT_LIVED_HINT - 1] == ["", ""]
    assert "same client id (cam-7" in hints[-1] and "Session taken over" in hints[-1]
    assert caplog.text.count("same client id") == 1  # logged once, not every time


def test_only_an_unanswered_connect_switches_auto_to_311():
    plan = Reconnects(MqttSettings(host="a", protocol="auto"))
    plan.failed("refused: Not authorized")  # a CONNACK refusal: the broker speaks MQTT 5
    assert plan.version == mqtt.MQTTv5
    plan.failed("no CONNACK", unanswered=True)
    assert plan.version == mqtt.MQTTv311


def test_auto_tries_mqtt_5_again_after_a_311_connection_is_lost():
    """One stalled MQTT 5 CONNECT must not keep the device on 3.1.1 (where the broker
    cannot refuse a publish) for good: the next connection tries MQTT 5 first again."""
    plan = Reconnects(MqttSettings(host="a", protocol="auto"))
    plan.failed("no CONNACK", unanswered=True)
    plan.connected()
    assert plan.version == mqtt.MQTTv311
    plan.lost("connection lost")
    assert plan.version == mqtt.MQTTv5
    fixed = Reconnects(MqttSettings(host="a", protocol="3.1.1"))
    fixed.connected()
    fixed.lost("connection lost")
    assert fixed.version == mqtt.MQTTv311  # a version set in the config stays


def test_a_refusal_stands_until_the_broker_takes_that_topic_again():
    problems = BrokerProblems("broker:1883", clock=lambda: 0.0)
    problems.refused_publish("ea/box/results", "Not authorized")
    problems.accepted("ea/box/stats")  # another topic: the refusal still stands
    assert "refused publishing to ea/box/results" in problems.error
    problems.accepted("ea/box/results")  # the ACL was fixed
    assert problems.error == "" and problems.refused == 1


def test_a_reconnect_hint_ends_with_a_connection_that_stayed_up():
    problems = BrokerProblems("broker:1883", clock=lambda: 0.0)
    problems.link_hint("connections keep closing: another client with the same id?")
    assert problems.error.startswith("connections keep closing")
    problems.link_hint("")
    assert problems.error == ""
    problems.refused_publish("t", "Not authorized")
    problems.link_hint("")  # no hint to end: the refusal stays
    assert "refused publishing to t" in problems.error


def test_a_refused_retained_will_is_tried_again_at_once_without_on_that_broker_only(
    monkeypatch, caplog
):
    clock = FakeClock(100.0)
    monkeypatch.setattr(reconnect.time, "monotonic", clock)
    plan = Reconnects(MqttSettings(hosts=("a", "b"), reconnect_min=5, protocol="5"))
    first = plan.attempt()
    assert first.retain and first.protocol == mqtt.MQTTv5
    with caplog.at_level(logging.WARNING):
        plan.failed("refused: Retain not supported", retain_refused=True)
        plan.failed("refused: Retain not supported", retain_refused=True)  # told once
    again = plan.attempt()
    assert again.broker == first.broker and not again.retain and plan.wait() == 0
    assert caplog.text.count("keeps no retained messages") == 1
    assert plan.counts() == {"retain_available": False, "reconnects": 0, "connect_failures": 0}
    plan.failed("connection refused")  # the next broker keeps its own
    assert plan.attempt().broker != first.broker and plan.attempt().retain


def test_a_connack_without_retain_available_is_remembered_until_one_with():
    plan = Reconnects(MqttSettings(host="a", protocol="5"))
    assert plan.connected(retains=True) and plan.retains
    plan.lost("connection lost")
    assert not plan.connected(retains=False)
    plan.lost("connection lost")
    assert not plan.attempt().retain  # the will goes unretained from then on
    assert plan.connected(retains=True)  # the broker was set to keep them again
    plan.lost("connection lost")
    assert plan.attempt().retain


def test_broker_limits_read_retain_available_from_the_connack():
    props = Properties(PacketTypes.CONNACK)
    assert BrokerLimits.of(props).retain
    props.RetainAvailable = 0
    assert not BrokerLimits.of(props).retain
