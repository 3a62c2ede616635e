"""``mqtt.hosts``: parsing, config errors naming the file and key, and failover order."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, parse_config
from edge_agent.publishing.endpoints import Endpoint, HostRotation, parse_endpoint
from edge_agent.publishing.reconnect import Reconnects
from edge_agent.publishing.settings import MqttSettings

SRC = "config.toml"


def parse(text: str):
    return parse_config(text, SRC, env={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mq1", Endpoint("mq1", 1883)),
        ("mq1:8883", Endpoint("mq1", 8883)),
        ("10.0.0.7:1884", Endpoint("10.0.0.7", 1884)),
        ("[::1]:1883", Endpoint("::1", 1883)),
        ("[fe80::1%eth0]", Endpoint("fe80::1%eth0", 1883)),
        (" mq2.example.org:1 ", Endpoint("mq2.example.org", 1)),
    ],
)
def test_endpoint_parsing(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("::1", "in brackets"),
        ("mq1:0", "port 1..65535"),
        ("mq1:70000", "port 1..65535"),
        ("mq1:x", "port 1..65535"),
        ("[::1", "[IPV6]:PORT"),
        ("[::1]1883", "[IPV6]:PORT"),
        ("mqtt://mq1", "HOST[:PORT]"),
        ("mq 1", "HOST[:PORT]"),
    ],
)
def test_bad_endpoints_say_what_was_expected(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_endpoint(text)


def test_endpoint_prints_as_it_is_written():
    assert [str(e) for e in (Endpoint("::1", 1883), Endpoint("mq1", 8883))] == [
        "[::1]:1883",
        "mq1:8883",
    ]


def test_config_hosts_are_normalized_in_order():
    config = parse('[mqtt]\nhosts = ["mq2", "mq1:8883", "[::1]:1884"]\nport = 8884\n')
    assert config.mqtt.hosts == ("mq2:1883", "mq1:8883", "[::1]:1884")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('hosts = ["mq1", "mq1:1883"]', "mqtt.hosts[1]: mq1:1883 is listed twice"),
        (
            'hosts = ["mq1", "::1"]',
            "mqtt.hosts[1]: write an IPv6 address in brackets, as [::1]:PORT",
        ),
        ('hosts = ["mq1:99999"]', "mqtt.hosts[0]: expected a port 1..65535 in 'mq1:99999'"),
        ("hosts = [1883]", 'mqtt.hosts: expected array of "HOST[:PORT]" strings, got [1883]'),
        ('hosts = "mq1"', 'mqtt.hosts: expected array of "HOST[:PORT]" strings, got "mq1"'),
        ('hosts = ["mq1"]\nhost = "mq0"', "mqtt.host: set mqtt.hosts or mqtt.host, not both"),
    ],
)
def test_bad_hosts_name_the_file_and_the_key(text, expected):
    with pytest.raises(ConfigError) as info:
        parse(f"[mqtt]\n{text}\n")
    assert str(info.value) == f"{SRC}: {expected}"


def test_settings_endpoints_precedence():
    assert MqttSettings(host="a", port=1).endpoints() == (Endpoint("a", 1),)
    # hosts wins; port stays the default of an entry without one
    assert MqttSettings(host="a", port=2, hosts=("b", "c:3")).endpoints() == (
        Endpoint("b", 2),
        Endpoint("c", 3),
    )
    with pytest.raises(ConfigError) as info:
        MqttSettings(hosts=("ok", "bad host")).validate()
    assert info.value.key == "mqtt.hosts[1]"


def test_rotation_moves_on_and_reports_a_full_cycle():
    rotation = HostRotation([Endpoint("a", 1), Endpoint("b", 1), Endpoint("c", 1)])
    assert rotation.current.host == "a"
    assert rotation.failed() is False and rotation.current.host == "b"
    rotation.connected()
    rotation.lost()  # b lost: a new cycle starts at c
    assert rotation.current.host == "c"
    assert rotation.failed() is False and rotation.current.host == "a"
    assert rotation.failed() is False and rotation.current.host == "b"
    assert rotation.failed() is True and rotation.current.host == "c"
    with pytest.raises(ValueError):
        HostRotation([])


def test_reconnects_back_off_once_per_cycle():
    settings = MqttSettings(hosts=("a", "b"), reconnect_min=5, reconnect_max=60, protocol="5")
    plan = Reconnects(settings)
    plan.failed("refused")
    assert plan.broker.host == "b" and plan.wait() == 0  # the next broker at once
    plan.failed("refused")
    assert plan.broker.host == "a" and plan.wait() > 2  # whole list failed: back off
    plan.connected()
    plan.lost("connection lost")
    assert plan.broker.host == "b"  # the one after the lost broker


def test_mqtt5_unanswered_retries_the_same_broker_with_311_first():
    plan = Reconnects(MqttSettings(hosts=("a", "b"), protocol="auto"))
    plan.failed("no CONNACK", unanswered=True)
    assert plan.broker.host == "a" and plan.version == 4  # MQTTv311
    plan.failed("no CONNACK", unanswered=True)
    assert plan.broker.host == "b" and plan.version == 5


def test_single_broker_keeps_backing_off_every_failure():
    plan = Reconnects(MqttSettings(host="a", reconnect_min=5, protocol="5"))
    plan.failed("refused")
    assert plan.broker.host == "a" and plan.wait() > 2
