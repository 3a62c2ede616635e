"""A throwaway PKI for the TLS tests, made with ``cryptography``.

:func:`make_pki` writes a CA, a server certificate for 127.0.0.1/localhost, a server
certificate signed by the same CA but valid only for another name (``mqtt.example``),
a client certificate, and a second, unrelated CA. Keys are ECDSA P-256 and certificates
live one day, so nothing generated here can outlive the test run in any meaningful way.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The only name the "wrong host" certificate is valid for; nothing resolves it here.
OTHER_HOST = "mqtt.example"


class Issued(NamedTuple):
    """A private key and its certificate, in memory."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


class CertFiles(NamedTuple):
    """PEM files of a certificate and its unencrypted PKCS#8 key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """The files :func:`make_pki` wrote.

    Attributes:
        ca: the CA certificate that signed ``server`` and ``wrong_host``.
        server: server certificate for ``localhost`` and ``127.0.0.1``.
        wrong_host: server certificate from the same CA, valid only for ``OTHER_HOST``.
        other_ca: a CA that signed nothing the broker presents.
        client: a client certificate from ``ca`` (for brokers requiring one).
    """

    ca: Path
    server: CertFiles
    wrong_host: CertFiles
    other_ca: Path
    client: CertFiles


def _name(common_name: str) -> x509.Name:
    """A subject/issuer name holding only a CN."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, public_key, issuer_public_key=None
) -> x509.CertificateBuilder:
    """A certificate valid from five minutes ago (clock skew) for one day.

    With key identifiers: Python 3.13's default context verifies with X509_STRICT,
    which requires them.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key or public_key),
            critical=False,
        )
    )


def make_ca(common_name: str) -> Issued:
    """A self-signed CA certificate allowed to sign certificates.

    Args:
        common_name: the CA's CN.

    Returns:
        The CA key and certificate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue_server(ca: Issued, common_name: str, dns: tuple[str, ...], ips: tuple[str, ...] = ()):
    """A TLS server certificate signed by ``ca`` for exactly the given names.

    Args:
        ca: the issuing CA.
        common_name: the CN (clients ignore it when SANs are present).
        dns: DNS names for the subjectAltName.
        ips: IP addresses for the subjectAltName.

    Returns:
        The :class:`Issued` key and certificate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        _builder(common_name, ca.cert.subject, key.public_key(), ca.key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue_client(ca: Issued, common_name: str) -> Issued:
    """A TLS client certificate signed by ``ca`` (a broker with ``require_certificate``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, ca.cert.subject, key.public_key(), ca.key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def write_cert(directory: Path, stem: str, issued: Issued) -> CertFiles:
    """Write ``stem.pem`` (certificate) and ``stem.key`` (0600 private key) in directory."""
    cert = directory / f"{stem}.pem"
    key = directory / f"{stem}.key"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    return CertFiles(cert, key)


def make_pki(directory: Path) -> Pki:
    """Generate the test PKI into ``directory`` (created if missing).

    Returns:
        The paths, see :class:`Pki`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("edge-agent test CA")
    server = issue_server(ca, "localhost", ("localhost",), ("127.0.0.1",))
    wrong = issue_server(ca, OTHER_HOST, (OTHER_HOST,))
    other = make_ca("unrelated test CA")
    return Pki(
        ca=write_cert(directory, "ca", ca).cert,
        server=write_cert(directory, "server", server),
        wrong_host=write_cert(directory, "wrong-host", wrong),
        other_ca=write_cert(directory, "other-ca", other).cert,
        client=write_cert(directory, "client", issue_client(ca, "edge-agent test client")),
    )
