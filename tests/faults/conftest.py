"""Fixtures of the security half of the fault suite (tests/faults/test_security_*.py).

Package-scoped, so the test modules share one locked-down broker and one device daemon
(started once, ~3 s, stopped after the last test of the package):

* ``secure_pki``: CA, server certificates (right and wrong host name), unrelated CA.
* ``secure_broker``: mosquitto with TLS only, passwords and the per-account ACL of
  :mod:`tests.support.secure_broker`, for device ``e2e-dev`` (group ``g1``) and
  ``other-dev``.
* ``monitor``: a subscriber to ``#`` (the monitor account) started before the daemon,
  so it holds every message the daemon ever published.
* ``release_keys``: the signing key the daemon trusts and one it does not.
* ``release_server``: a loopback HTTP server for releases and the polled manifest URL.
* ``secure_daemon``: ``edge-agent run`` on the demo model and clip, TLS verifying the
  broker, MQTT password from ``EDGE_AGENT_MQTT_PASSWORD`` (the file holds a decoy), a
  manifest URL with credentials in a 0644 config file.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.broker import MOSQUITTO, MqttSubscriber
from tests.support.daemon import DEVICE_ID, PREFIX, DaemonProcess
from tests.support.paths import REPO
from tests.support.secure_broker import SecureBroker
from tests.support.tls import Pki, make_pki
from tests.support.updates_http import FileServer, Route

DEMO = REPO / "models" / "demo"
OTHER_DEVICE = "other-dev"
TLS_DEVICE = "tls-dev"  # the account of the daemons whose TLS check must fail
GROUP = "g1"
MANIFEST_PATH = "/fleet/manifest.json"


@dataclass(frozen=True)
class ReleaseKeys:
    """Ed25519 keys: ``trusted`` (its public key is in the daemon's trusted_keys)."""

    trusted: Ed25519PrivateKey
    untrusted: Ed25519PrivateKey
    trusted_pub: Path


@dataclass(frozen=True)
class Secrets:
    """The secrets the daemon is given; none may ever show up in logs or messages."""

    env_password: str  # the device's real MQTT password, from EDGE_AGENT_MQTT_PASSWORD
    file_password: str  # a decoy mqtt.password in the file (the environment wins)
    url_user: str
    url_password: str  # credentials in updates.manifest_url


@pytest.fixture(scope="package")
def secure_pki(tmp_path_factory) -> Pki:
    """The test PKI (see tests/support/tls.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="package")
def secure_broker(tmp_path_factory, secure_pki) -> Iterator[SecureBroker]:
    """The locked-down mosquitto, stopped after the package."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = SecureBroker(
        tmp_path_factory.mktemp("secure-broker"),
        secure_pki,
        prefix=PREFIX,
        devices={DEVICE_ID: (GROUP,), OTHER_DEVICE: (), TLS_DEVICE: ()},
    ).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="package")
def monitor(secure_broker) -> Iterator[MqttSubscriber]:
    """Everything on ``#`` from before the daemon started."""
    sub = secure_broker.subscriber("monitor")
    yield sub
    sub.stop()


@pytest.fixture(scope="package")
def release_keys(tmp_path_factory) -> ReleaseKeys:
    """A trusted signing key (public half on disk) and an untrusted one."""
    trusted = Ed25519PrivateKey.generate()
    pub = tmp_path_factory.mktemp("keys") / "fleet.pub"
    pub.write_bytes(
        trusted.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ReleaseKeys(trusted, Ed25519PrivateKey.generate(), pub)


@pytest.fixture(scope="package")
def release_server() -> Iterator[FileServer]:
    """Loopback HTTP server for releases and the polled manifest URL."""
    with FileServer() as server:
        # The polled manifest URL answers 404: the daemon logs the failure, URL and all.
        server.add(MANIFEST_PATH, Route(status=404))
        yield server


@pytest.fixture(scope="package")
def daemon_secrets(secure_broker) -> Secrets:
    """The secrets the package's daemon runs with."""
    return Secrets(
        env_password=secure_broker.account(DEVICE_ID).password,
        file_password=f"filepw-{secrets.token_urlsafe(12)}",
        url_user="fleet",
        url_password=f"urlpw-{secrets.token_urlsafe(12)}",
    )


def secure_mqtt(broker: SecureBroker, ca: Path, device: str = DEVICE_ID, **extra) -> dict:
    """The ``[mqtt]`` table of daemon ``device`` logging in to ``broker`` over TLS."""
    return {
        "host": "127.0.0.1",
        "port": broker.port,
        "tls": True,
        "ca_file": str(ca),
        "tls_insecure": False,
        "username": device,
        **extra,
    }


@pytest.fixture(scope="package")
def secure_daemon(
    tmp_path_factory,
    secure_broker,
    secure_pki,
    monitor,
    release_keys,
    release_server,
    daemon_secrets,
) -> Iterator[DaemonProcess]:
    """The device daemon, connected and running; stopped (and its group killed) after."""
    broker, s = secure_broker, daemon_secrets
    workdir = tmp_path_factory.mktemp("secure-daemon")
    manifest_url = release_server.url(MANIFEST_PATH).replace(
        "http://", f"http://{s.url_user}:{s.url_password}@"
    )
    daemon = DaemonProcess(
        workdir,
        broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        # The real password only in the environment (as a systemd credential passes it);
        # the file's mqtt.password is a decoy that the environment overrides.
        env={"EDGE_AGENT_MQTT_PASSWORD": s.env_password},
        device={"groups": [GROUP]},
        mqtt=secure_mqtt(broker, secure_pki.ca, password=s.file_password, homeassistant=True),
        updates={
            "enabled": True,
            "trusted_keys": [str(release_keys.trusted_pub)],
            "allowed_hosts": ["127.0.0.1"],
            "allow_http": True,  # the loopback release server speaks plain HTTP
            "manifest_url": manifest_url,
            "poll_interval": 0,  # poll once at startup
            "retries": 0,
            "download_timeout": 5.0,
            "health_frames": 3,
        },
    )
    daemon.config_path.chmod(0o644)  # the permission warning is part of what is tested
    daemon.start()
    try:
        daemon.wait_log(r"mqtt \S+: connected", timeout=30)  # fails fast if it exits
        monitor.wait_for(
            daemon.topics.status, lambda m: m.json().get("state") == "running", timeout=30
        )
        yield daemon
    finally:
        if daemon.alive():
            try:
                daemon.stop(signal.SIGTERM, timeout=10)
            except AssertionError:
                pass  # killed below; the log tail is in the report
        daemon.kill_group()
        print(f"---- secure daemon log ----\n{daemon.log_tail()}")
