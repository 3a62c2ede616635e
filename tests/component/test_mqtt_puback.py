"""A plain PUBACK reaches the publisher without paho building its reason and properties
anew (publishing/puback.py); any other PUBACK keeps paho's own handling."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import paho.mqtt.properties
import pytest
from paho.mqtt.exception import MalformedPacket

from edge_agent.publishing import puback
from edge_agent.publishing.puback import plain_acks
from tests.support.broker import wait_until

RESULTS = "edge/dev1/results"


def _acked(client: mqtt.Client, mid: int, packet: bytes, cmd: str = "PUBACK") -> list:
    """Feed ``client`` one incoming PUBACK body for an in-flight ``mid``: what its
    publish callback was given."""
    seen: list = []
    client.on_publish = lambda c, u, m, reason, props: seen.append((m, reason, props))
    client._out_messages[mid] = mqtt.MQTTMessage(mid, b"t")
    client._in_packet["packet"] = bytearray(packet)
    client._handle_pubackcomp(cmd)
    return seen


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_a_two_byte_puback_is_a_success_without_properties(protocol):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
    assert plain_acks(client)
    [(mid, reason, props)] = _acked(client, 5, b"\x00\x05")
    assert mid == 5 and reason == 0 and not reason.is_failure and str(reason) == "Success"
    assert props.json() == {}
    assert 5 not in client._out_messages
    # Told once: a second PUBACK for the same id calls nobody.
    client._in_packet["packet"] = bytearray(b"\x00\x05")
    assert client._handle_pubackcomp("PUBACK") == mqtt.MQTT_ERR_SUCCESS


@pytest.mark.parametrize("body", [b"\x00\x07\x10", b"\x00\x07\x10\x00"])
def test_an_mqtt5_puback_with_a_reason_and_no_properties_shares_one_per_reason(body):
    """mosquitto answers 0x10 (no matching subscribers) for a topic nobody reads."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    assert plain_acks(client)
    [(mid, reason, props)] = _acked(client, 7, body)
    assert mid == 7 and reason == 0x10 and str(reason) == "No matching subscribers"
    assert not reason.is_failure and props.json() == {}
    [(_, again, _)] = _acked(client, 8, b"\x00\x08" + body[2:])
    assert again is reason  # built once
    [(_, refused, _)] = _acked(client, 9, b"\x00\x09\x87")
    assert refused.is_failure and str(refused) == "Not authorized"


def test_a_puback_with_properties_or_an_undefined_reason_takes_pahos_path():
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    assert plain_acks(client)
    # Reason 0x10 (no matching subscribers) with a Reason String property.
    text = b"nobody listens"
    body = b"\x00\x08\x10" + bytes([3 + len(text), 0x1F, 0, len(text)]) + text
    [(_, reason, props)] = _acked(client, 8, body)
    assert reason == 0x10 and props.ReasonString == "nobody listens"
    # 0x9D (Server moved) is no PUBACK reason: refused as paho refuses it.
    with pytest.raises(MalformedPacket):
        _acked(client, 9, b"\x00\x09\x9d")
    # Over MQTT 3.1.1 a PUBACK is two bytes: a third is paho's to refuse.
    old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    assert plain_acks(old)
    with pytest.raises(MalformedPacket):
        _acked(old, 10, b"\x00\x0a\x10")


def test_a_pubcomp_takes_pahos_path():
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    own = client._handle_pubackcomp
    calls: list[str] = []
    client._handle_pubackcomp = lambda cmd: calls.append(cmd) or own(cmd)
    assert plain_acks(client)
    _acked(client, 9, b"\x00\x09", "PUBCOMP")
    assert calls == ["PUBCOMP"]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_against_mosquitto_no_properties_are_built_per_result(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory, monkeypatch, protocol
):
    pub = mqtt_publisher_factory(mqtt_broker.port, protocol=protocol)
    assert pub.wait_connected(10)
    built = [0]
    init = paho.mqtt.properties.Properties.__init__

    def counting(self, *args, **kwargs):
        built[0] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(paho.mqtt.properties.Properties, "__init__", counting)
    for seq in range(50):
        pub.publish_result({"seq": seq})
    mqtt_subscriber.wait_count(RESULTS, 50)
    assert [m.json()["seq"] for m in mqtt_subscriber.on(RESULTS)] == list(range(50))
    wait_until(lambda: pub.stats()["inflight"] == 0, 10, "every PUBACK read")
    assert pub.stats()["published"] >= 50 and pub.stats()["refused"] == 0
    # paho's own path builds one Properties per PUBACK (50 here), and one per publish
    # over MQTT 5 when none is given; the publisher gives its own.
    assert built[0] < 5, built[0]


def test_against_mosquitto_a_topic_nobody_reads_builds_no_properties_either(
    mqtt_broker, mqtt_publisher_factory, monkeypatch
):
    """Over MQTT 5 mosquitto acknowledges such a publish with reason 0x10."""
    pub = mqtt_publisher_factory(mqtt_broker.port, protocol="5")
    assert pub.wait_connected(10)
    reasons: list[int] = []
    built = [0]
    init = paho.mqtt.properties.Properties.__init__
    reason_of = puback._reason

    def counting(self, *args, **kwargs):
        built[0] += 1
        init(self, *args, **kwargs)

    def seen(value: int):
        reasons.append(value)
        return reason_of(value)

    monkeypatch.setattr(paho.mqtt.properties.Properties, "__init__", counting)
    monkeypatch.setattr(puback, "_reason", seen)
    for seq in range(50):
        pub.publish_result({"seq": seq})
    stats = pub.stats
    wait_until(lambda: stats()["published"] >= 50 and not stats()["inflight"], 10, "50 PUBACKs")
    assert reasons[-50:] == [0x10] * 50 and pub.stats()["refused"] == 0
    assert built[0] < 5, built[0]
