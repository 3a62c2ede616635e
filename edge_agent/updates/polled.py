"""A polled manifest: installed when it names a newer release; refusals remembered.

The runner keeps a polled manifest's HTTP validators in memory only once its release was
handled for good (see ``agent.py``). After a restart it fetches the manifest afresh and
would install the same release again: one that failed its health check would be
downloaded and put on trial at every restart (every night, on a box that reboots
nightly). So the manifests whose release was refused for a reason a retry cannot change
(:data:`FOR_GOOD`: a verdict on the release's own files or on its model) are remembered
by the SHA-256 of the manifest as served, in ``{state_dir}/models/polled_refused.json``
(the :data:`KEEP` newest). The same manifest polled again is then left alone, with one
log line. A push of that release still runs (an operator's choice), and another manifest
(a new version, or the release fixed and signed again) is installed as any other.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.commands import UpdateCommand
from edge_agent.updates.installer import UpdateInstaller
from edge_agent.updates.manifest import parse_manifest
from edge_agent.updates.release import read_json_record, write_json_atomic
from edge_agent.updates.signing import load_envelope, parse_envelope
from edge_agent.updates.urls import redact_url

logger = logging.getLogger(__name__)

REFUSALS = "polled_refused.json"
KEEP = 16  # refused manifests remembered, newest last
# Verdicts on the release itself. Not those that hang on this box's config or state
# (keys, URL rules, a busy pipeline...), which a restart may change.
FOR_GOOD = frozenset({"health_check_failed", "corrupt", "not_tflite", "bad_labels"})


def handle_polled(installer: UpdateInstaller, body: bytes, url: str) -> str | None:
    """Install a polled manifest if it names a newer release and was not refused here.

    Returns:
        The failure reason, or None when handled (installed, not newer, refused before).
    """
    shown = redact_url(url)
    try:
        envelope = load_envelope(body)
        manifest = parse_manifest(parse_envelope(envelope).manifest)
    except ModelUpdateError as exc:
        logger.warning("model update: %s offers an unusable manifest: %s", shown, exc)
        return exc.reason
    try:
        active = installer.store.active()
    except ModelUpdateError:
        active = None
    same = active is not None and active.name == manifest.name
    if same and manifest.version <= active.manifest.version:
        logger.debug("model update: %s offers %s; not newer", shown, manifest.label)
        return None
    root, digest = installer.store.root, hashlib.sha256(body).hexdigest()
    earlier = next((e for e in _read(root) if e["sha256"] == digest), None)
    if earlier is not None:
        logger.info(
            "model update: %s offers %s, refused here before (%s); not installing it again",
            shown, manifest.label, earlier.get("reason"),
        )  # fmt: skip
        return None
    logger.info("model update: %s offers %s; installing", shown, manifest.label)
    try:
        installer.install(UpdateCommand(envelope=envelope, manifest_url=url))
    except ModelUpdateError as exc:
        logger.warning("model update: polled install failed: %s", exc)
        if exc.reason in FOR_GOOD:
            _remember(root, digest, manifest.label, exc.reason)
        return exc.reason
    return None


def _read(root: Path) -> list[dict[str, Any]]:
    """The remembered refusals (none when the file is missing or unreadable)."""
    data = read_json_record(root / REFUSALS, list, "ignoring it") or []
    return [e for e in data if isinstance(e, dict) and isinstance(e.get("sha256"), str)]


def _remember(root: Path, digest: str, label: str, reason: str) -> None:
    """Add a refusal (a failure to write is logged: the refusal still stands this run)."""
    kept = [e for e in _read(root) if e["sha256"] != digest][-(KEEP - 1) :]
    kept.append({"sha256": digest, "release": label, "reason": reason, "at": time.time()})
    try:
        write_json_atomic(
            root / REFUSALS, kept, error=f"cannot remember {label} refused",
            hook=lambda point: None, point="refusals",
        )  # fmt: skip
    except ModelUpdateError as exc:
        logger.warning("model store: %s", exc)
