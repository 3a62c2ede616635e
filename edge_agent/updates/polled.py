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

A polled release whose trial the daemon does not survive (a crash, the watchdog, a
power cut: startup recovery finds it still on trial, ``trial_abandoned``) cannot be
refused by a verdict. Each such start is counted by release, and once
:data:`ABANDONED_LIMIT` starts in a row found it so, the poll leaves it alone as a
refusal for good: a box would otherwise install it, crash and go back at every start.
A polled install of that release that is confirmed clears the count.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from edge_agent.errors import ModelUpdateError
from edge_agent.redaction import mask_credentials
from edge_agent.updates.commands import UpdateCommand
from edge_agent.updates.installer import UpdateInstaller
from edge_agent.updates.manifest import parse_manifest
from edge_agent.updates.release import read_json_record, write_json_atomic
from edge_agent.updates.signing import load_envelope, parse_envelope
from edge_agent.updates.store import ModelStore

logger = logging.getLogger(__name__)

REFUSALS = "polled_refused.json"
KEEP = 16  # refused manifests remembered, newest last
# Verdicts on the release itself. Not those that hang on this box's config or state
# (keys, URL rules, a busy pipeline...), which a restart may change.
FOR_GOOD = frozenset({"health_check_failed", "corrupt", "not_tflite", "bad_labels"})
ABANDONED = "trial_abandoned"  # an entry by release: starts that found it still on trial
ABANDONED_LIMIT = 2


def count_abandoned(store: ModelStore) -> None:
    """Count, once per start, a release that startup recovery found still on trial."""
    note = store.recovery
    if note is None or note.reason != ABANDONED or not note.from_label:
        return
    entries = _read(store.root)
    mine = next((e for e in entries if _abandoned(e, note.from_label)), None)
    count = (mine or {}).get("count", 0)
    count = count + 1 if isinstance(count, int) else 1
    logger.warning("model update: %s was on trial when the daemon stopped (%d in a row)",
                   note.from_label, count)  # fmt: skip
    _write(store.root, [e for e in entries if e is not mine] + [
        {"sha256": "", "release": note.from_label, "reason": ABANDONED, "count": count,
         "at": time.time()}])  # fmt: skip


def _abandoned(entry: dict[str, Any], label: str) -> bool:
    """True for the abandoned-trial count of release ``label``."""
    return entry.get("reason") == ABANDONED and entry.get("release") == label


def handle_polled(installer: UpdateInstaller, body: bytes, url: str) -> str | None:
    """Install a polled manifest if it names a newer release and was not refused here.

    Returns:
        The failure reason, or None when handled (installed, not newer, refused before).
    """
    shown = mask_credentials(url)
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
    entries = _read(root)
    earlier = next((e for e in entries if digest and e["sha256"] == digest), None)
    crashed = next((e for e in entries if _abandoned(e, manifest.label)), None)
    starts = crashed.get("count") if crashed is not None else 0
    if isinstance(starts, int) and starts >= ABANDONED_LIMIT:
        earlier = {"reason": f"its trial ended the daemon {starts} starts in a row"}
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
        return exc.reason  # the count stays: the trial was not passed (or never ran)
    if crashed is not None:  # it survived its trial this time
        _write(root, [e for e in _read(root) if not _abandoned(e, manifest.label)])
    return None


def _read(root: Path) -> list[dict[str, Any]]:
    """The remembered refusals (none when the file is missing or unreadable)."""
    data = read_json_record(root / REFUSALS, list, "ignoring it") or []
    return [e for e in data if isinstance(e, dict) and isinstance(e.get("sha256"), str)]


def _remember(root: Path, digest: str, label: str, reason: str) -> None:
    """Add a refusal (a failure to write is logged: the refusal still stands this run)."""
    kept = [e for e in _read(root) if e["sha256"] != digest][-(KEEP - 1) :]
    kept.append({"sha256": digest, "release": label, "reason": reason, "at": time.time()})
    _write(root, kept)


def _write(root: Path, entries: list[dict[str, Any]]) -> None:
    """Write the entries (the :data:`KEEP` newest); a failure is logged."""
    try:
        write_json_atomic(
            root / REFUSALS, entries[-KEEP:], error="cannot remember polled refusals",
            hook=lambda point: None, point="refusals",
        )  # fmt: skip
    except ModelUpdateError as exc:
        logger.warning("model store: %s", exc)
