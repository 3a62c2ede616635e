"""``edge-agent model push`` logs in with a client certificate, as the daemon does.

A real mosquitto requires a client certificate from the test CA; a simulated device
(subscribed with its own certificate) answers the update command with an ``active``
state, which push reports.
"""

from __future__ import annotations

import json
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.cli import main
from edge_agent.errors import PublishError
from edge_agent.publishing.settings import MqttSettings
from edge_agent.tools.release.push import push
from tests.support.broker import MqttSubscriber
from tests.support.tls import make_pki
from tests.support.updates_release import make_release

PREFIX = "edge-agent"
DEVICE = "cam-1"
COMMAND = f"{PREFIX}/{DEVICE}/cmd/model/update"


@pytest.fixture
def cert_broker(tmp_path, mqtt_broker_factory):
    """mosquitto over TLS that refuses clients without a certificate from the test CA."""
    pki = make_pki(tmp_path / "pki")
    tls = {
        "cafile": pki.ca,
        "certfile": pki.server.cert,
        "keyfile": pki.server.key,
        "require_certificate": True,
    }
    return mqtt_broker_factory("mosquitto", tls=tls), pki


def test_push_logs_in_with_a_client_certificate(cert_broker, tmp_path, capsys):
    broker, pki = cert_broker
    release = make_release(tmp_path / "releases", Ed25519PrivateKey.generate(), "1.0.0")
    device_tls = {"ca_certs": pki.ca, "certfile": pki.client.cert, "keyfile": pki.client.key}
    device = MqttSubscriber(broker.host, broker.port, [COMMAND], tls=device_tls).start()
    argv = [
        "model", "push", str(release.dir), "--device", DEVICE,
        "--broker", f"{broker.host}:{broker.port}", "--ca-file", str(pki.ca),
        "--cert-file", str(pki.client.cert), "--key-file", str(pki.client.key),
        "--base-url", "https://models.invalid/cls/1.0.0/", "--timeout", "30",
    ]  # fmt: skip
    outcome: dict[str, int] = {}
    pusher = threading.Thread(target=lambda: outcome.update(code=main(argv)), daemon=True)
    pusher.start()
    try:
        command = device.wait_for(COMMAND, timeout=20).json()
        assert command["manifest"] == release.envelope
        state = {"state": "active", "request_id": command["request_id"]}
        device.publish(f"{PREFIX}/{DEVICE}/model", json.dumps(state), retain=True)
        pusher.join(30)
    finally:
        device.stop()
    assert not pusher.is_alive(), "push did not finish"
    assert outcome == {"code": 0}
    assert f"{DEVICE}: active" in capsys.readouterr().out


def test_push_without_a_client_certificate_is_refused(cert_broker, tmp_path):
    broker, pki = cert_broker
    release = make_release(tmp_path / "releases", None, "1.0.0")
    settings = MqttSettings(
        host=broker.host, port=broker.port, tls=True, ca_file=str(pki.ca), connect_timeout=2.0
    )
    with pytest.raises(PublishError, match=f"{broker.host}:{broker.port}"):
        push(release.dir, broker=settings, prefix=PREFIX, devices=[DEVICE], base_url="https://x/")


def test_push_names_a_missing_certificate_file(cert_broker, tmp_path, capsys):
    broker, pki = cert_broker
    release = make_release(tmp_path / "releases", None, "1.0.0")
    missing = tmp_path / "nowhere.pem"
    code = main([
        "model", "push", str(release.dir), "--device", DEVICE,
        "--broker", f"{broker.host}:{broker.port}", "--ca-file", str(pki.ca),
        "--cert-file", str(missing), "--key-file", str(pki.client.key),
        "--base-url", "https://x/",
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "mqtt.cert_file" in err and str(missing) in err
