"""Operator tooling behind ``edge-agent model keygen|pack|verify``.

Workflow: ``keygen`` once (keep the private key offline, install the public key on
devices as ``updates.trusted_keys``), ``pack`` a release per model version, ``verify``
it, then ``push`` it (see ``push.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.atomicfile import fsync_path
from edge_agent.errors import ModelUpdateError
from edge_agent.inference.model_info import is_tflite
from edge_agent.updates.manifest import (
    MANIFEST_FILE,
    FileEntry,
    Manifest,
    build_manifest,
    parse_manifest,
    validate_file_name,
)
from edge_agent.updates.release import check_release_files
from edge_agent.updates.signing import (
    TrustedKeys,
    envelope_bytes,
    key_id,
    load_envelope,
    load_private_key,
    parse_envelope,
    sign_manifest,
    verify_envelope,
)
from edge_agent.updates.targets import DeviceIdentity, check_targets

logger = logging.getLogger(__name__)


def _write_new(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Create a file with a mode from the start (no window where a key is world-readable)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as exc:
        raise ModelUpdateError("exists", f"{path} exists (use --force to overwrite)") from exc
    except OSError as exc:
        raise ModelUpdateError("io_error", f"{path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def keygen(
    private_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str],
    *,
    passphrase: bytes | None = None,
    overwrite: bool = False,
) -> str:
    """Create an Ed25519 signing key pair.

    Args:
        private_path: PEM PKCS#8 private key, written with mode 0600.
        public_path: PEM public key (0644), to install on devices.
        passphrase: encrypt the private key with it.
        overwrite: replace existing files.

    Returns:
        The key id (first 16 hex of sha256 of the raw public key).

    Both files are written or neither (a private key without its public half, or one
    overwritten by it, is a signing key lost).

    Raises:
        ModelUpdateError: ``same_file`` (one path for both), ``exists`` or ``io_error``.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    if os.path.realpath(private_path) == os.path.realpath(public_path):
        raise ModelUpdateError(
            "same_file", f"{private_path}: the private and the public key need a file each"
        )
    if not overwrite:
        for path in (private_path, public_path):
            if os.path.lexists(path):
                raise ModelUpdateError("exists", f"{path} exists (use --force to overwrite)")
    key = Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, 0o600, overwrite)
    try:
        _write_new(public_path, public_pem, 0o644, overwrite)
    except ModelUpdateError:
        private_path.unlink()
        raise
    return key_id(key.public_key())


def _copy_entry(source: Path, role: str, folder: Path) -> FileEntry:
    """Copy an input into the release folder; its entry is the hash of the bytes written.

    One pass reads, writes and hashes, so an input that changes while it is packed
    still gives a release whose manifest matches its files.
    """
    name = validate_file_name(source.name)
    digest = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as src, open(folder / name, "xb") as dst:
            block = src.read(8)
            if role in ("model", "cpu_model") and not is_tflite(block):
                raise ModelUpdateError("not_tflite", f"{name} is not a TFLite model")
            while block:
                digest.update(block)
                dst.write(block)
                size += len(block)
                block = src.read(1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    except OSError as exc:
        raise ModelUpdateError("io_error", f"cannot pack {source}: {exc.strerror or exc}") from exc
    return FileEntry(name, role, digest.hexdigest(), size)


def _assemble(
    folder: Path, inputs: Mapping[str, Path], key: Ed25519PrivateKey, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Copy the inputs into ``folder``, then sign and write the manifest of the copies."""
    entries: list[FileEntry] = []
    for role, source in inputs.items():
        name = validate_file_name(source.name)
        if any(entry.name == name for entry in entries):
            raise ModelUpdateError("bad_manifest", f"duplicate file names ({name})")
        entries.append(_copy_entry(source, role, folder))
    manifest = build_manifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), files=entries, **fields
    )
    envelope = sign_manifest(manifest, key)
    manifest_path = folder / MANIFEST_FILE
    manifest_path.write_bytes(envelope_bytes(envelope))
    fsync_path(manifest_path)
    return envelope


def pack(
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    version: str | int,
    model: str | os.PathLike[str],
    private_key: str | os.PathLike[str] | Ed25519PrivateKey,
    task: str = "auto",
    cpu_model: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    golden_input: str | os.PathLike[str] | None = None,
    golden_output: str | os.PathLike[str] | None = None,
    adapter: Mapping[str, Any] | None = None,
    min_agent_version: str | None = None,
    description: str = "",
    golden_tolerance: float | None = None,
    targets: Mapping[str, Sequence[str]] | None = None,
    passphrase: bytes | None = None,
    overwrite: bool = False,
) -> Path:
    """Build a signed release directory.

    The input files are copied under their base names (which must be safe release
    file names), hashed, listed in the manifest, and the manifest is signed into
    ``manifest.json``. The directory is assembled beside ``out_dir`` and renamed
    into place, so it never exists half-written. ``targets`` names the boxes the
    release is for (``compatible``, ``devices``, ``groups``, ``replaces``; see
    ``edge_agent/updates/targets.py``); none: any device that runs a model of ``name``.

    Returns:
        ``out_dir``.

    Raises:
        ModelUpdateError: ``bad_manifest`` (invalid field or file name, duplicate
            names), ``not_tflite`` (a model without the TFLite identifier),
            ``bad_key``, ``exists``, ``io_error``.
    """
    out = Path(out_dir)
    key = (
        private_key
        if isinstance(private_key, Ed25519PrivateKey)
        else load_private_key(private_key, passphrase)
    )
    release = {
        "name": name,
        "version": version,
        "task": task,
        "adapter": adapter,
        "min_agent_version": min_agent_version,
        "description": description,
        "golden_tolerance": golden_tolerance,
        "targets": targets,
    }
    roles = {
        "model": model,
        "cpu_model": cpu_model,
        "labels": labels,
        "golden_input": golden_input,
        "golden_output": golden_output,
    }
    inputs = {role: Path(p) for role, p in roles.items() if p is not None}
    if out.exists() and not overwrite:
        raise ModelUpdateError("exists", f"{out} exists (use --force to overwrite)")
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise ModelUpdateError("io_error", f"cannot write {out}: {exc}") from exc
    try:
        envelope = _assemble(tmp, inputs, key, release)
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
        fsync_path(out.parent)
    except OSError as exc:
        raise ModelUpdateError("io_error", f"cannot write {out}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("packed %s@%s into %s (key %s)", name, version, out, envelope["key_id"])
    return out


def read_manifest(target: str | os.PathLike[str]) -> Manifest:
    """The manifest of a release directory or envelope file, checked but not verified.

    For showing what a release says (its targets); :func:`verify` checks the signature.

    Raises:
        ModelUpdateError: ``bad_manifest``.
    """
    return parse_manifest(parse_envelope(read_envelope(target)).manifest)


def read_envelope(target: str | os.PathLike[str]) -> Any:
    """The signed envelope of a release directory or envelope file, parsed, not verified.

    Raises:
        ModelUpdateError: ``bad_manifest`` (missing, unreadable, not JSON, oversize).
    """
    path = Path(target)
    envelope_file = path / MANIFEST_FILE if path.is_dir() else path
    try:
        data = envelope_file.read_bytes()
    except OSError as exc:
        raise ModelUpdateError("bad_manifest", f"{envelope_file}: {exc.strerror}") from exc
    return load_envelope(data)


def verify(
    target: str | os.PathLike[str],
    public_keys: TrustedKeys | Iterable[str | os.PathLike[str]],
    *,
    allow_unsigned: bool = False,
    device: DeviceIdentity | None = None,
    running: str | None = None,
) -> Manifest:
    """Check a release directory (or a lone ``manifest.json``) as a device would.

    Args:
        target: release directory or envelope file.
        public_keys: TrustedKeys, or key files/directories.
        allow_unsigned: accept an unsigned manifest.
        device: also check the release's targets against this box (``incompatible``).
        running: the model name that box runs (None: any name may replace it).

    Returns:
        The verified manifest.

    Raises:
        ModelUpdateError: ``unsigned``, ``untrusted_key``, ``bad_signature``,
            ``bad_manifest``, and for a directory ``sha256_mismatch``, ``truncated``,
            ``too_large``, ``not_tflite``, ``corrupt``.
    """
    path = Path(target)
    keys = (
        public_keys if isinstance(public_keys, TrustedKeys) else TrustedKeys.from_paths(public_keys)
    )
    envelope_file = path / MANIFEST_FILE if path.is_dir() else path
    try:
        data = envelope_file.read_bytes()
    except OSError as exc:
        raise ModelUpdateError("bad_manifest", f"{envelope_file}: {exc.strerror}") from exc
    manifest = verify_envelope(load_envelope(data), keys, allow_unsigned=allow_unsigned)
    if path.is_dir():
        check_release_files(path, manifest, full=True)
    if device is not None:
        check_targets(manifest, device, running)
    return manifest
