"""The update policy of a device, and the checks it makes before downloading a release."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_agent import __version__
from edge_agent.errors import ModelUpdateError
from edge_agent.updates.commands import CommandPolicy
from edge_agent.updates.history import highest_installed
from edge_agent.updates.manifest import Manifest
from edge_agent.updates.release import InstalledRelease
from edge_agent.updates.targets import DeviceIdentity
from edge_agent.updates.transport import DownloadSettings
from edge_agent.updates.versions import parse_version


@dataclass(frozen=True)
class UpdateSettings:
    """The device's update policy (the ``[updates]`` config maps onto this).

    Attributes:
        download: transport policy (hosts, http, timeouts, retries, CA file).
        allow_force: accept forced re-installs and downgrades.
        allow_unsigned: accept unsigned manifests (lab only; never in production).
        max_file_bytes: largest file accepted, whatever the manifest says.
        agent_version: compared with a manifest's ``min_agent_version``.
        device: this box, matched against a release's targets.
        model_name: the configured model's declared name (``model.name``), the
            running model's name while no release is installed ("": undeclared).
        allow_model_change: accept a release of another name without ``replaces``.
    """

    download: DownloadSettings = field(default_factory=DownloadSettings)
    allow_force: bool = False
    allow_unsigned: bool = False
    max_file_bytes: int = 512 * 1024 * 1024
    agent_version: str = __version__
    device: DeviceIdentity = DeviceIdentity()
    model_name: str = ""
    allow_model_change: bool = False

    def policy(self) -> CommandPolicy:
        """The command-parsing policy these settings imply."""
        d = self.download
        return CommandPolicy(d.allowed_hosts, d.allow_http, self.allow_force)


def check_policy(
    manifest: Manifest,
    settings: UpdateSettings,
    active: InstalledRelease | None,
    store_root: Path,
    *,
    force: bool,
) -> None:
    """Agent version, replay protection and size limits, before any download.

    Args:
        active: the active release (None: none, or unreadable).
        store_root: the model store's root (its version history).

    Raises:
        ModelUpdateError: ``bad_command``, ``agent_too_old``, ``not_newer``, ``too_large``.
    """
    if force and not settings.allow_force:
        raise ModelUpdateError("bad_command", "force is disabled on this device")
    needed = manifest.min_agent_version
    if needed is not None and parse_version(settings.agent_version) < needed:
        raise ModelUpdateError(
            "agent_too_old", f"{manifest.label} needs agent {needed}, this is {__version__}"
        )
    same_model = active is not None and active.name == manifest.name
    if same_model and not force and manifest.version <= active.manifest.version:
        raise ModelUpdateError(
            "not_newer",
            f"{manifest.label} is not newer than the active {active.label} (use force)",
        )
    highest = highest_installed(store_root, manifest.name)
    if highest is not None and not force and manifest.version <= highest:
        # Not the active name, but this box has run a newer one: a replay.
        raise ModelUpdateError(
            "not_newer",
            f"{manifest.label} is not newer than {manifest.name}@{highest} "
            "installed before (use force)",
        )
    for entry in manifest.files:
        if entry.size > settings.max_file_bytes:
            raise ModelUpdateError(
                "too_large",
                f"{entry.name}: {entry.size} bytes, limit {settings.max_file_bytes}",
            )
