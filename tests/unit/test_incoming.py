"""Routing of incoming messages: commands, Home Assistant's birth, retained ones."""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt

from edge_agent.publishing.incoming import Incoming
from edge_agent.publishing.topics import Topics

TOPICS = Topics("edge", "dev1", listen=["homeassistant/status"])


def message(topic: str, payload: bytes, retain: bool) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=topic.encode())
    msg.payload, msg.retain = payload, retain
    return msg


def test_retained_commands_are_ignored_and_only_commands_warn(caplog):
    got = []
    incoming = Incoming(TOPICS, False, lambda *a: got.append(a), None, "broker:1883")
    with caplog.at_level(logging.DEBUG, logger="edge_agent.publishing.incoming"):
        incoming.message(message("edge/dev1/cmd/model/update", b"{}", retain=True))
        # Home Assistant set to retain its birth: at every connect, with the configs.
        incoming.message(message("homeassistant/status", b"online", retain=True))
        incoming.message(message("homeassistant/status", b"online", retain=False))
    assert got == [("homeassistant/status", b"online", "homeassistant/status")]
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == ["mqtt broker:1883: ignoring retained message on edge/dev1/cmd/model/update"]
    ignored = [r.getMessage() for r in caplog.records if "ignoring retained" in r.getMessage()]
    assert len(ignored) == 2 and incoming.commands == 1
