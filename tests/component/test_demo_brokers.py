"""The demo's own broker: amqtt, else a local mosquitto, else one line naming the fix."""

from __future__ import annotations

import io
import socket

import paho.mqtt.publish as publish
import pytest

from edge_agent.errors import PublishError
from edge_agent.tools.demo import app as demo_app
from edge_agent.tools.demo import brokers
from edge_agent.tools.demo.app import Demo, DemoOptions
from tests.support.broker import MOSQUITTO, MqttSubscriber, free_port

needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed")


@needs_mosquitto
def test_without_amqtt_a_local_mosquitto_serves_and_stops(tmp_path):
    started = brokers.start_demo_broker(tmp_path, amqtt=False)
    assert started.kind == "local mosquitto"
    port = started.broker.port
    sub = MqttSubscriber("127.0.0.1", port, topics=("demo/#",)).start()
    try:
        sub.wait_subscribed(0)
        publish.single("demo/x", b"hello", hostname="127.0.0.1", port=port)
        assert sub.wait_for("demo/x", timeout=10).payload == b"hello"
    finally:
        sub.stop()
        assert started.broker.stop(5.0) is True
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_no_broker_at_all_is_one_line_naming_the_one_command(tmp_path, monkeypatch):
    monkeypatch.setattr(brokers, "find_mosquitto", lambda: None)
    with pytest.raises(PublishError) as caught:
        brokers.start_demo_broker(tmp_path, amqtt=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith(f"run: {brokers.fix_command()}")


def test_the_fix_names_the_extra_from_310_and_the_system_broker_on_39():
    assert brokers.fix_command((3, 9, 18)) == "sudo apt-get install mosquitto"
    assert brokers.fix_command((3, 10, 0)) == "pip install 'edge-agent[broker]'"
    assert brokers.fix_command((3, 13, 0)) == "pip install 'edge-agent[broker]'"


def test_a_broker_that_never_started_is_not_reported_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_app, "LOCAL_BROKER", ("127.0.0.1", free_port()))

    def unavailable(workdir):
        raise PublishError("no MQTT broker: run: sudo apt-get install mosquitto")

    monkeypatch.setattr(demo_app, "start_demo_broker", unavailable)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(PublishError):
        Demo(DemoOptions(seconds=1), out, err).run()
    assert "broker" not in out.getvalue() + err.getvalue()
    assert list(tmp_path.glob("edge-agent-demo-*")) == []  # still cleaned up
