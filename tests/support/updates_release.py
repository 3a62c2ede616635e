"""Build signed model releases for the update tests, and snapshot a model store."""

from __future__ import annotations

import hashlib
import os
import shutil
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.updates.installer import UpdateInstaller
from edge_agent.updates.manifest import FileEntry
from edge_agent.updates.release import InstalledRelease
from edge_agent.updates.signing import envelope_bytes, load_envelope, sign_manifest
from edge_agent.updates.states import UpdateJob


def fake_tflite(size: int = 4096, seed: int = 0) -> bytes:
    """Bytes with the TFLite identifier at offset 4 (enough for the installer's check)."""
    rng = hashlib.sha256(str(seed).encode()).digest()
    body = (rng * (size // len(rng) + 1))[: size - 8]
    return b"\x1c\x00\x00\x00TFL3" + body


@dataclass
class Release:
    """A release on disk: its directory, envelope, and the files by name."""

    dir: Path
    envelope: dict[str, Any]
    files: dict[str, bytes]

    @property
    def version(self) -> str:
        return str(self.envelope["manifest"]["version"])


def make_release(
    root: Path,
    key: Ed25519PrivateKey | None,
    version: str | int,
    *,
    name: str = "cls",
    files: Mapping[str, tuple[str, bytes]] | None = None,
    changes: Mapping[str, Any] | None = None,
    task: str = "classification",
) -> Release:
    """Write ``root/<name>/<version>/`` with files + manifest.json and return it.

    Args:
        files: name -> (role, bytes); default a fake model and labels.
        changes: manifest fields to override after hashing (to forge bad manifests).
        key: signing key, or None for an unsigned envelope.
    """
    files = files or {
        "model.tflite": ("model", fake_tflite(seed=zlib.crc32(str(version).encode()))),
        "labels.txt": ("labels", b"background\ncat\ndog\n"),
    }
    entries = [
        {"name": n, "role": role, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for n, (role, data) in files.items()
    ]
    manifest = {
        "format": 1,
        "name": name,
        "version": version,
        "created": "2025-01-31T12:00:00Z",
        "task": task,
        "adapter": {"top_k": 3},
        "files": entries,
    }
    manifest.update(changes or {})
    envelope = sign_manifest(manifest, key) if key is not None else {"manifest": manifest}
    out = root / name / str(version)
    out.mkdir(parents=True, exist_ok=True)
    for n, (_, data) in files.items():
        if "/" not in n and n not in ("", ".", ".."):
            (out / n).write_bytes(data)
    (out / "manifest.json").write_bytes(envelope_bytes(envelope))
    return Release(out, envelope, {n: d for n, (_, d) in files.items()})


def snapshot(models_root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under the store (empty dirs ignored), but the
    request ledger ``requests.json``, which records every answered command, not a release."""
    out = {}
    for dirpath, _, filenames in os.walk(models_root):
        for f in filenames:
            if f == "requests.json" and Path(dirpath) == Path(models_root):
                continue
            path = Path(dirpath) / f
            out[str(path.relative_to(models_root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def install_local(
    installer: UpdateInstaller, release_dir: Path, *, force: bool = False
) -> InstalledRelease:
    """Install a release directory with every check of ``install`` but the HTTP transfer.

    For store and crash tests that are about what happens after the download: the files
    are copied where the download would write them. Raises ModelUpdateError as install.
    """
    envelope = load_envelope((release_dir / "manifest.json").read_bytes())
    job = UpdateJob()

    def fetch(entry: FileEntry, dest: Path, progress: Any) -> None:
        shutil.copyfile(release_dir / entry.name, dest)
        progress(dest.stat().st_size, entry.size)

    return installer._guarded(job, lambda: installer._install(job, envelope, force, fetch))
