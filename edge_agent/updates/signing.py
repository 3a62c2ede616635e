"""Ed25519 signatures over manifests, trusted keys, and the signed envelope.

The one signature format is the envelope, stored as a release's ``manifest.json``
and carried inline in update commands::

    {"manifest": {...}, "signature": "<base64 Ed25519 signature>", "key_id": "<16 hex>"}

The signature covers :func:`~edge_agent.updates.manifest.canonical_json` of the
``manifest`` object (sorted keys, no whitespace, UTF-8). ``key_id`` is the first 16 hex
digits of sha256 over the raw 32-byte public key. A bare manifest object, or an envelope
without ``signature``, is *unsigned*.

Public key files may be PEM (``BEGIN PUBLIC KEY``), OpenSSH (``ssh-ed25519 ...``) or
the raw 32-byte key in base64 on one line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from edge_agent.errors import ModelUpdateError
from edge_agent.fileguard import check_regular
from edge_agent.updates.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from edge_agent.updates.strictjson import canonical_json, loads_json

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# cryptography is imported where a signature is first checked, not with this module or
# when key files are read: key files are parsed here (each format has a fixed layout for
# Ed25519), so a daemon with trusted keys is spared the 7-12 MB of resident memory
# cryptography costs until an update actually arrives.

logger = logging.getLogger(__name__)

_KEY_ID = re.compile(r"[0-9a-f]{16}")
_KEY_SUFFIXES = (".pub", ".pem", ".key")
# DER SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): this prefix, then the 32 bytes.
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")
# Algorithm OIDs (DER contents) a wrong key file is likely to carry, for the error.
_SPKI_OTHERS = {
    bytes.fromhex("2a8648ce3d0201"): "EC",
    bytes.fromhex("2a864886f70d010101"): "RSA",
    bytes.fromhex("2b6571"): "Ed448",
    bytes.fromhex("2b656e"): "X25519",
}
_PEM = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\s*([A-Za-z0-9+/=\s]*?)\s*-----END \1-----", re.DOTALL
)
# An OpenSSH key blob: string "ssh-ed25519", then string(the 32 bytes).
_SSH_ED25519 = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | bytes) -> str:
    """First 16 hex digits of sha256 over the raw public key (a key, or its 32 bytes)."""
    raw = key if isinstance(key, bytes) else raw_public_bytes(key)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_bytes(data: bytes, *, source: str = "key") -> bytes:
    """The 32 raw bytes of an Ed25519 public key in PEM, OpenSSH or base64-raw text.

    Raises:
        ModelUpdateError: ``bad_key`` when it is none of these or not Ed25519.
    """
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            raw = _pem_key(text)
        elif text.startswith(b"ssh-ed25519 "):
            blob = base64.b64decode(text.split()[1], validate=True)
            if len(blob) != len(_SSH_ED25519) + 32 or not blob.startswith(_SSH_ED25519):
                raise ValueError("malformed ssh-ed25519 key blob")
            raw = blob[len(_SSH_ED25519) :]
        else:
            raw = base64.b64decode(text, validate=True)
            if len(raw) != 32:
                raise ValueError(f"raw key has {len(raw)} bytes, expected 32")
    except (ValueError, IndexError, binascii.Error) as exc:
        raise ModelUpdateError("bad_key", f"{source}: not an Ed25519 public key: {exc}") from exc
    return raw


def _pem_key(text: bytes) -> bytes:
    """The raw key of the first ``BEGIN PUBLIC KEY`` PEM block (DER SubjectPublicKeyInfo);
    text around it (``openssl pkey -text``'s dump, a comment line) is ignored, as OpenSSL
    and cryptography ignore it.

    Raises:
        ValueError: no such block, or not an Ed25519 key.
    """
    blocks = list(_PEM.finditer(text))
    if not blocks:
        raise ValueError("no well-formed PEM block")
    match = next((m for m in blocks if m[1] == b"PUBLIC KEY"), None)
    if match is None:
        raise ValueError(f"PEM block is {blocks[0][1].decode()}, expected PUBLIC KEY")
    der = base64.b64decode(b"".join(match[2].split()), validate=True)
    if len(der) == len(_SPKI_ED25519) + 32 and der.startswith(_SPKI_ED25519):
        return der[len(_SPKI_ED25519) :]
    algorithm = next((name for oid, name in _SPKI_OTHERS.items() if oid in der[:32]), "")
    raise ValueError(f"key is {algorithm or 'not Ed25519'}, expected Ed25519")


def parse_public_key(data: bytes, *, source: str = "key") -> Ed25519PublicKey:
    """Parse an Ed25519 public key from PEM, OpenSSH or base64-raw text.

    Raises:
        ModelUpdateError: ``bad_key`` when it is none of these or not Ed25519.
    """
    return _public_key(public_key_bytes(data, source=source), source)


def _public_key(raw: bytes, source: str) -> Ed25519PublicKey:
    """A cryptography key from its 32 bytes (this imports cryptography)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ModelUpdateError("bad_key", f"{source}: not an Ed25519 public key: {exc}") from exc


def load_public_key_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a public key file (PEM, OpenSSH, or base64 raw): its 32 raw bytes.

    Raises:
        ModelUpdateError: ``bad_key`` when unreadable or not an Ed25519 key.
    """
    try:
        check_regular(path)  # a FIFO or a device is never a key file
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelUpdateError("bad_key", f"{path}: {exc.strerror or exc}") from exc
    return public_key_bytes(data, source=str(path))


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read a public key file (PEM, OpenSSH, or base64 raw).

    Raises:
        ModelUpdateError: ``bad_key`` when unreadable or not an Ed25519 key.
    """
    return _public_key(load_public_key_bytes(path), str(path))


def load_private_key(
    path: str | os.PathLike[str], passphrase: bytes | None = None
) -> Ed25519PrivateKey:
    """Read a PEM (PKCS#8) Ed25519 private key.

    Raises:
        ModelUpdateError: ``bad_key`` when unreadable, encrypted without (or with a
            wrong) passphrase, or not Ed25519.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=passphrase)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ModelUpdateError("bad_key", f"{path}: cannot load private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelUpdateError("bad_key", f"{path}: key is {type(key).__name__}, expected Ed25519")
    return key


class TrustedKeys:
    """The public keys a device accepts signatures from, by key id.

    Keys are held as their raw bytes; a cryptography key object is made for each check.
    """

    def __init__(self, keys: Iterable[Ed25519PublicKey | bytes] = ()):
        raw = (k if isinstance(k, bytes) else raw_public_bytes(k) for k in keys)
        self._keys: dict[str, bytes] = {key_id(r): r for r in raw}

    @classmethod
    def from_paths(cls, paths: Iterable[str | os.PathLike[str]]) -> TrustedKeys:
        """Load key files; a directory contributes its ``*.pub``/``*.pem``/``*.key`` files.

        Raises:
            ModelUpdateError: ``bad_key`` for an unreadable or invalid key file.
        """
        keys = []
        for path in map(Path, paths):
            if path.is_dir():
                files = sorted(p for p in path.iterdir() if p.suffix in _KEY_SUFFIXES)
                if not files:
                    logger.warning("trusted key directory %s holds no key files", path)
                keys.extend(load_public_key_bytes(p) for p in files)
            else:
                keys.append(load_public_key_bytes(path))
        return cls(keys)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        """The key with an id, or None.

        Raises:
            ModelUpdateError: ``bad_key`` when cryptography refuses the key's bytes.
        """
        raw = self._keys.get(kid)
        return None if raw is None else _public_key(raw, f"trusted key {kid}")

    @property
    def ids(self) -> tuple[str, ...]:
        """The trusted key ids."""
        return tuple(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


class Envelope(NamedTuple):
    """A structurally checked envelope; ``signature``/``key_id`` None when unsigned."""

    manifest: dict[str, Any]
    signature: bytes | None
    key_id: str | None


def parse_envelope(obj: Any) -> Envelope:
    """Check an envelope's structure (not the signature).

    A bare manifest (an object with ``format`` and no ``manifest`` key) is taken as
    an unsigned envelope.

    Raises:
        ModelUpdateError: ``bad_manifest`` on a malformed envelope.
    """
    if not isinstance(obj, dict):
        raise ModelUpdateError("bad_manifest", "manifest envelope must be a JSON object")
    if "manifest" not in obj and "format" in obj:
        return Envelope(obj, None, None)
    unknown = set(obj) - {"manifest", "signature", "key_id"}
    if unknown or not isinstance(obj.get("manifest"), dict):
        raise ModelUpdateError(
            "bad_manifest", 'envelope must be {"manifest": {...}, "signature", "key_id"}'
        )
    sig_text, kid = obj.get("signature"), obj.get("key_id")
    if sig_text is None:
        return Envelope(obj["manifest"], None, None)
    if not isinstance(sig_text, str) or len(sig_text) > 200:
        raise ModelUpdateError("bad_manifest", "signature must be a base64 string")
    try:
        signature = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ModelUpdateError("bad_signature", "signature is not valid base64") from exc
    if len(signature) != 64:
        raise ModelUpdateError(
            "bad_signature", f"signature has {len(signature)} bytes, Ed25519 has 64"
        )
    if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
        raise ModelUpdateError("bad_manifest", "key_id must be 16 lowercase hex digits")
    return Envelope(obj["manifest"], signature, kid)


def sign_manifest(manifest: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign a manifest object and return the envelope.

    Raises:
        ModelUpdateError: ``bad_manifest`` when the manifest is not canonical JSON.
    """
    signature = private_key.sign(canonical_json(manifest))
    return {
        "manifest": dict(manifest),
        "signature": base64.b64encode(signature).decode("ascii"),
        "key_id": key_id(private_key.public_key()),
    }


def verify_envelope(obj: Any, trusted: TrustedKeys, *, allow_unsigned: bool = False) -> Manifest:
    """Verify an envelope's signature against trusted keys, then validate the manifest.

    Args:
        obj: the parsed envelope (or bare manifest).
        trusted: the keys this device accepts.
        allow_unsigned: accept unsigned manifests (lab use only). A present but
            invalid signature is still rejected.

    Returns:
        The validated Manifest.

    Raises:
        ModelUpdateError: ``unsigned``, ``untrusted_key``, ``bad_signature``,
            ``bad_manifest``, ``unsupported_format``.
    """
    env = parse_envelope(obj)
    if env.signature is None:
        if not allow_unsigned:
            raise ModelUpdateError("unsigned", "the manifest carries no signature")
        logger.warning("accepting an unsigned manifest (updates.allow_unsigned is on)")
        return parse_manifest(env.manifest)
    key = trusted.get(env.key_id or "")
    if key is None:
        trusted_ids = ", ".join(trusted.ids) or "none configured"
        raise ModelUpdateError(
            "untrusted_key", f"signed by key {env.key_id}; trusted: {trusted_ids}"
        )
    from cryptography.exceptions import InvalidSignature  # loaded by trusted.get()

    try:
        key.verify(env.signature, canonical_json(env.manifest))
    except InvalidSignature as exc:
        raise ModelUpdateError(
            "bad_signature", f"signature by key {env.key_id} does not match"
        ) from exc
    return parse_manifest(env.manifest)


def load_envelope(data: bytes) -> Any:
    """Parse envelope bytes (a ``manifest.json`` file or a fetched manifest URL).

    Raises:
        ModelUpdateError: ``bad_manifest`` on oversize or invalid JSON.
    """
    return loads_json(data, max_bytes=MAX_MANIFEST_BYTES, reason="bad_manifest", what="manifest")


def envelope_bytes(envelope: Mapping[str, Any]) -> bytes:
    """Serialize an envelope for ``manifest.json`` (readable, stable)."""
    return (json.dumps(envelope, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
