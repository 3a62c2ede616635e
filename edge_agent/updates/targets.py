"""Which boxes a signed release is meant for, decided before a byte is downloaded.

The manifest is signed, so its targets are the release author's word, not the
sender's. Four optional fields (see ``manifest.py``):

* ``compatible``: device types the release fits (``device.type``, e.g.
  ``rpi4-coral-usb``), in the manner of Mender's artifact ``device_type``. Absent: any
  device type. Present on a box whose ``device.type`` is unset: refused (the box cannot
  show it fits).
* ``devices`` and ``groups``: when either is given, the box must be listed in
  ``devices`` or be a member of one of ``groups`` (the union, as a rollout names a
  group plus a few extra boxes). Both absent: any device.
* ``replaces``: model names this release may take over from. A box running model
  ``blobs`` takes a release of another name only when ``blobs`` is in ``replaces`` or
  ``updates.allow_model_change`` is on. A box running a configured model with no
  declared name (``model.name`` unset, no release installed yet) takes the first
  release of any name: that release gives the box its model name.

Old manifests carry none of these fields and so fit any device type, device and group,
but still cannot change the model name a box runs.
"""

from __future__ import annotations

from typing import NamedTuple

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.manifest import Manifest


class DeviceIdentity(NamedTuple):
    """What a release's targets are matched against (from ``[device]``)."""

    device_type: str = ""
    device_id: str = ""
    groups: tuple[str, ...] = ()


def check_targets(
    manifest: Manifest,
    device: DeviceIdentity,
    running: str | None,
    *,
    allow_model_change: bool = False,
) -> None:
    """Refuse a release that is not meant for this box.

    Args:
        manifest: the verified manifest.
        device: this box.
        running: the name of the model it runs (None: a configured model without a
            declared name, which any release name may replace).
        allow_model_change: ``updates.allow_model_change``.

    Raises:
        ModelUpdateError: ``incompatible``, saying which target does not match.
    """
    label = manifest.label
    if manifest.compatible and device.device_type not in manifest.compatible:
        have = f"device type {device.device_type!r}" if device.device_type else "no device.type"
        raise ModelUpdateError(
            "incompatible", f"{label} is for device types {list(manifest.compatible)}; {have}"
        )
    if manifest.devices or manifest.groups:
        named = device.device_id in manifest.devices
        member = any(g in manifest.groups for g in device.groups)
        if not (named or member):
            raise ModelUpdateError(
                "incompatible",
                f"{label} targets {describe_targets(manifest, only=('devices', 'groups'))}; "
                f"this is device {device.device_id!r} in groups {list(device.groups)}",
            )
    if running is None or running == manifest.name or allow_model_change:
        return
    if running not in manifest.replaces:
        raise ModelUpdateError(
            "incompatible",
            f"{label} would replace model {running!r}: the manifest must list it in "
            "replaces (or set updates.allow_model_change)",
        )


def describe_targets(
    manifest: Manifest, only: tuple[str, ...] = ("compatible", "devices", "groups", "replaces")
) -> str:
    """The targets for people: ``compatible=[...] devices=[...]``, or ``any device``."""
    parts = [f"{key}={list(getattr(manifest, key))}" for key in only if getattr(manifest, key)]
    return " ".join(parts) or "any device"
