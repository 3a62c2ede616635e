"""TLS (CA, host name, client certificates) and password authentication against mosquitto.

Certificates are made by the test with ``cryptography``: a CA, a server certificate for
127.0.0.1/localhost, a client certificate, and a second, unrelated CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.broker import MqttSubscriber, wait_until

RESULTS = "edge/dev1/results"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key, cert) -> tuple[Path, Path]:
    key_path = path.with_suffix(".key")
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path = path.with_suffix(".pem")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _cert(subject: str, issuer_key, issuer_name, *, ca=False, sans=(), usage=None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Key identifiers: Python 3.13's default context verifies with X509_STRICT.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key((issuer_key or key).public_key()),
            False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """CA, server certs (right and wrong host name), client cert, and an unrelated CA."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _cert("edge-agent test CA", None, None, ca=True)
    out = {"ca": _write(d / "ca", ca_key, ca)[0]}
    other_key, other = _cert("unrelated CA", None, None, ca=True)
    out["other_ca"] = _write(d / "other-ca", other_key, other)[0]
    local = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = ExtendedKeyUsageOID.SERVER_AUTH
    key, cert = _cert("localhost", ca_key, ca.subject, sans=local, usage=server)
    out["server"], out["server_key"] = _write(d / "server", key, cert)
    key, cert = _cert("mqtt.example", ca_key, ca.subject, sans=[x509.DNSName("mqtt.example")])
    out["wrong_host"], out["wrong_host_key"] = _write(d / "wrong-host", key, cert)
    client = ExtendedKeyUsageOID.CLIENT_AUTH
    key, cert = _cert("dev1", ca_key, ca.subject, usage=client)
    out["client"], out["client_key"] = _write(d / "client", key, cert)
    return out


def _tls_broker(factory, pki, server="server", require_certificate=False):
    tls = {
        "cafile": pki["ca"],
        "certfile": pki[server],
        "keyfile": pki[f"{server}_key"],
        "require_certificate": require_certificate,
    }
    return factory("mosquitto", tls=tls)


def _refused(pub, caplog, text: str) -> None:
    wait_until(lambda: pub.stats()["connect_failures"] >= 2, 10, "two failed attempts")
    assert not pub.connected
    assert text in caplog.text


def test_tls_with_the_right_ca(mqtt_broker_factory, mqtt_publisher_factory, pki):
    broker = _tls_broker(mqtt_broker_factory, pki)
    sub = MqttSubscriber(broker.host, broker.port, [RESULTS], tls={"ca_certs": pki["ca"]})
    sub.start()
    try:
        pub = mqtt_publisher_factory(broker.port, tls=True, ca_file=str(pki["ca"]))
        assert pub.wait_connected(10)
        pub.publish_result({"seq": 1})
        assert sub.wait_for(RESULTS).json() == {"seq": 1}
    finally:
        sub.stop()


def test_tls_refused_with_a_wrong_ca(mqtt_broker_factory, mqtt_publisher_factory, pki, caplog):
    broker = _tls_broker(mqtt_broker_factory, pki)
    with caplog.at_level(logging.WARNING):
        pub = mqtt_publisher_factory(broker.port, tls=True, ca_file=str(pki["other_ca"]))
        _refused(pub, caplog, "CERTIFICATE_VERIFY_FAILED")


def test_host_name_mismatch_unless_tls_insecure(
    mqtt_broker_factory, mqtt_publisher_factory, pki, caplog
):
    broker = _tls_broker(mqtt_broker_factory, pki, server="wrong_host")
    with caplog.at_level(logging.WARNING):
        strict = mqtt_publisher_factory(broker.port, tls=True, ca_file=str(pki["ca"]))
        _refused(strict, caplog, "IP address mismatch")
    insecure = mqtt_publisher_factory(
        broker.port, device="dev2", tls=True, ca_file=str(pki["ca"]), tls_insecure=True
    )
    assert insecure.wait_connected(10)


def test_client_certificate(mqtt_broker_factory, mqtt_publisher_factory, pki, caplog):
    broker = _tls_broker(mqtt_broker_factory, pki, require_certificate=True)
    with caplog.at_level(logging.WARNING):
        anonymous = mqtt_publisher_factory(broker.port, tls=True, ca_file=str(pki["ca"]))
        # TLS 1.3: the broker rejects the missing certificate after the handshake.
        _refused(anonymous, caplog, "failed to receive on socket")
    pub = mqtt_publisher_factory(
        broker.port,
        device="dev2",
        tls=True,
        ca_file=str(pki["ca"]),
        cert_file=str(pki["client"]),
        key_file=str(pki["client_key"]),
    )
    assert pub.wait_connected(10)


def test_username_password(mqtt_broker_factory, mqtt_publisher_factory, tmp_path, caplog):
    passwords = tmp_path / "passwd"
    passwords.touch()
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwords), "edge", "s3cret-pw"], check=True, timeout=10
    )
    broker = mqtt_broker_factory("mosquitto", password_file=passwords)
    with caplog.at_level(logging.DEBUG):
        wrong = mqtt_publisher_factory(
            broker.port, username="edge", password="wrong-pw-123", protocol="auto", start=False
        )
        plan, versions = wrong._reconnects, []
        failed = plan.failed

        def record(*args, **kwargs):
            failed(*args, **kwargs)
            versions.append(plan.version)

        plan.failed = record
        wrong.start()
        _refused(wrong, caplog, "refused: Not authorized")
        # A refusal is an answer in MQTT 5: "auto" must not switch to 3.1.1 for it.
        assert set(versions) == {5}, versions
        assert "over MQTT 3.1.1" not in caplog.text
        right = mqtt_publisher_factory(
            broker.port, device="dev2", username="edge", password="s3cret-pw"
        )
        assert right.wait_connected(10)
    assert "wrong-pw-123" not in caplog.text and "s3cret-pw" not in caplog.text
