"""Ed25519 manifest signatures, key files and the envelope."""

from __future__ import annotations

import base64
import copy
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.signing import (
    TrustedKeys,
    key_id,
    load_private_key,
    load_public_key,
    parse_envelope,
    public_key_bytes,
    sign_manifest,
    verify_envelope,
)
from edge_agent.updates.strictjson import canonical_json
from tests.support.daemon import python_stdout

# RFC 8032 section 7.1, test 1: a fixed key makes the signature bytes checkable.
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def manifest():
    return {
        "format": 1,
        "name": "cls",
        "version": 4,
        "created": "2025-01-31T12:00:00Z",
        "task": "classification",
        "files": [{"name": "m.tflite", "role": "model", "sha256": "0" * 64, "size": 1}],
    }


@pytest.fixture
def key():
    return Ed25519PrivateKey.from_private_bytes(RFC_SECRET)


@pytest.fixture
def trusted(key):
    return TrustedKeys([key.public_key()])


def test_key_id_is_sha256_prefix_of_raw_public_key(key):
    assert key_id(key.public_key()) == hashlib.sha256(RFC_PUBLIC).hexdigest()[:16]


def test_signature_covers_canonical_bytes(key):
    env = sign_manifest(manifest(), key)
    signature = base64.b64decode(env["signature"])
    key.public_key().verify(signature, canonical_json(manifest()))  # raises if not
    assert env["key_id"] == key_id(key.public_key())
    assert env["manifest"] == manifest()


def test_verify_round_trip(key, trusted):
    m = verify_envelope(sign_manifest(manifest(), key), trusted)
    assert (m.name, str(m.version)) == ("cls", "4")


def test_key_order_and_whitespace_do_not_matter(key, trusted):
    env = sign_manifest(manifest(), key)
    env["manifest"] = dict(reversed(list(env["manifest"].items())))
    assert verify_envelope(env, trusted).name == "cls"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.update(version=5),
        lambda m: m["files"][0].update(sha256="1" * 64),
        lambda m: m["files"][0].update(size=2),
        lambda m: m.update(name="clt"),
        lambda m: m.update(adapter={"top_k": 3}),
    ],
)
def test_tampered_manifest_is_bad_signature(key, trusted, tamper):
    env = sign_manifest(manifest(), key)
    env = copy.deepcopy(env)
    tamper(env["manifest"])
    with pytest.raises(ModelUpdateError) as e:
        verify_envelope(env, trusted)
    assert e.value.reason == "bad_signature"


def test_flipped_signature_bit_is_bad_signature(key, trusted):
    env = sign_manifest(manifest(), key)
    sig = bytearray(base64.b64decode(env["signature"]))
    sig[10] ^= 1
    env["signature"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(ModelUpdateError) as e:
        verify_envelope(env, trusted)
    assert e.value.reason == "bad_signature"


def test_unknown_key_is_untrusted(trusted):
    other = Ed25519PrivateKey.generate()
    with pytest.raises(ModelUpdateError) as e:
        verify_envelope(sign_manifest(manifest(), other), trusted)
    assert e.value.reason == "untrusted_key"
    assert key_id(other.public_key()) in str(e.value)


def test_forged_key_id_still_fails(key, trusted):
    other = Ed25519PrivateKey.generate()
    env = sign_manifest(manifest(), other)
    env["key_id"] = key_id(key.public_key())  # claims the trusted key
    with pytest.raises(ModelUpdateError) as e:
        verify_envelope(env, trusted)
    assert e.value.reason == "bad_signature"


@pytest.mark.parametrize("envelope", [manifest(), {"manifest": manifest()}])
def test_unsigned(trusted, envelope):
    with pytest.raises(ModelUpdateError) as e:
        verify_envelope(envelope, trusted)
    assert e.value.reason == "unsigned"
    assert verify_envelope(envelope, trusted, allow_unsigned=True).name == "cls"


def test_allow_unsigned_still_rejects_a_bad_signature(key, trusted):
    env = sign_manifest(manifest(), key)
    env["manifest"]["version"] = 9
    with pytest.raises(ModelUpdateError) as e:
        verify_envelope(env, trusted, allow_unsigned=True)
    assert e.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "envelope, reason",
    [
        ([], "bad_manifest"),
        ({"manifest": [], "signature": "x"}, "bad_manifest"),
        ({"manifest": manifest(), "signature": "!!", "key_id": "0" * 16}, "bad_signature"),
        ({"manifest": manifest(), "signature": "AAAA", "key_id": "0" * 16}, "bad_signature"),
        ({"manifest": manifest(), "signature": "A" * 86 + "==", "key_id": "XYZ"}, "bad_manifest"),
        ({"manifest": manifest(), "signature": 5, "key_id": "0" * 16}, "bad_manifest"),
        ({"manifest": manifest(), "sig": "x"}, "bad_manifest"),
    ],
)
def test_malformed_envelopes(envelope, reason):
    with pytest.raises(ModelUpdateError) as e:
        parse_envelope(envelope)
    assert e.value.reason == reason


def test_public_key_formats(tmp_path, key):
    pub = key.public_key()
    pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ssh = pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    files = {
        "a.pem": pem,
        "b.pub": ssh + b" operator@laptop\n",
        "c.key": base64.b64encode(RFC_PUBLIC) + b"\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert key_id(load_public_key(tmp_path / name)) == key_id(pub)
    (tmp_path / "README").write_text("ignored: not a key suffix")
    keys = TrustedKeys.from_paths([tmp_path])
    assert keys.ids == (key_id(pub),)


@pytest.mark.parametrize(
    "data", [b"", b"hello", base64.b64encode(b"x" * 31), b"-----BEGIN PUBLIC KEY-----\nAA\n"]
)
def test_bad_public_key_files(tmp_path, data):
    (tmp_path / "k.pub").write_bytes(data)
    with pytest.raises(ModelUpdateError) as e:
        load_public_key(tmp_path / "k.pub")
    assert e.value.reason == "bad_key"


def test_non_ed25519_key_is_rejected(tmp_path):
    ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "ec.pem").write_bytes(pem)
    with pytest.raises(ModelUpdateError, match="expected Ed25519"):
        load_public_key(tmp_path / "ec.pem")


def test_encrypted_private_key_needs_passphrase(tmp_path, key):
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "k.pem").write_bytes(pem)
    assert key_id(load_private_key(tmp_path / "k.pem", b"secret").public_key()) == key_id(
        key.public_key()
    )
    for wrong in (None, b"nope"):
        with pytest.raises(ModelUpdateError) as e:
            load_private_key(tmp_path / "k.pem", wrong)
        assert e.value.reason == "bad_key"


def test_the_daemon_loads_cryptography_only_to_check_a_signature(tmp_path, key):
    # 7-12 MB of resident memory that a box needs only once an update arrives.
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "k.pub").write_bytes(pem)
    (tmp_path / "env.json").write_text(json.dumps(sign_manifest(manifest(), key)))
    code = (
        "import json, sys\n"
        "import edge_agent.cli.run, edge_agent.daemon.app, edge_agent.daemon.model_updates\n"
        "from edge_agent.updates.signing import TrustedKeys, verify_envelope\n"
        f"keys = TrustedKeys.from_paths([{str(tmp_path / 'k.pub')!r}])\n"
        "print('keys', len(keys), 'cryptography' in sys.modules)\n"
        f"env = json.load(open({str(tmp_path / 'env.json')!r}))\n"
        "print('verified', verify_envelope(env, keys).version, 'cryptography' in sys.modules)\n"
    )
    out = python_stdout(code)
    assert out.split() == ["keys", "1", "False", "verified", "4", "True"]


def test_key_files_are_read_as_cryptography_reads_them(tmp_path):
    # The daemon parses key files itself; cryptography must agree on every format.
    for _ in range(20):
        private = Ed25519PrivateKey.generate()
        pub = private.public_key()
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        pem = pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        ssh = pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        for data in (pem, pem.replace(b"\n", b"\r\n"), ssh + b" me@host", base64.b64encode(raw)):
            assert public_key_bytes(data) == raw


@pytest.mark.parametrize(
    "kind, message",
    [
        ("rsa", "key is RSA, expected Ed25519"),
        ("ed448", "key is Ed448, expected Ed25519"),
        ("x25519", "key is X25519, expected Ed25519"),
        ("private", "PEM block is PRIVATE KEY, expected PUBLIC KEY"),
        ("truncated", "no well-formed PEM block"),
        ("ssh ecdsa", "malformed ssh-ed25519 key blob"),
    ],
)
def test_wrong_key_files_are_named(tmp_path, key, kind, message):
    spki = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = key.public_key().public_bytes(*spki)
    data = {
        "rsa": lambda: rsa.generate_private_key(65537, 1024).public_key().public_bytes(*spki),
        "ed448": lambda: ed448.Ed448PrivateKey.generate().public_key().public_bytes(*spki),
        "x25519": lambda: x25519.X25519PrivateKey.generate().public_key().public_bytes(*spki),
        "private": lambda: key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "truncated": lambda: pem[:-10],
        "ssh ecdsa": lambda: (
            b"ssh-ed25519 "
            + ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .split()[1]
        ),
    }[kind]()
    (tmp_path / "k.pub").write_bytes(data)
    with pytest.raises(ModelUpdateError, match=message) as e:
        TrustedKeys.from_paths([tmp_path / "k.pub"])
    assert e.value.reason == "bad_key"
    assert str(tmp_path / "k.pub") in str(e.value)


def test_text_around_a_pem_public_key_is_ignored_as_openssl_does(tmp_path, key):
    # `openssl pkey -pubout -text` appends a dump; operators add comment lines.
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dump = b"ED25519 Public-Key:\npub:\n    d7:5a:98:01\n"
    other = Ed25519PrivateKey.generate().public_key()
    second = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for data in (pem + dump, pem + b"# release key, 2026\n", pem + second):
        assert public_key_bytes(data) == RFC_PUBLIC
        assert serialization.load_pem_public_key(data) == key.public_key()  # as cryptography
