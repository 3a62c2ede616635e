"""A release's targets: manifest fields, and which boxes they let the release onto."""

from __future__ import annotations

import pytest

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.manifest import FileEntry, build_manifest, parse_manifest
from edge_agent.updates.targets import DeviceIdentity, check_targets, describe_targets

FILES = [FileEntry("model.tflite", "model", "a" * 64, 10)]
BOX = DeviceIdentity("rpi4-coral-usb", "door-1", ("lobby", "north"))


def manifest(name="blobs", **targets):
    obj = build_manifest(
        name=name, version="2.0.0", created="2025-01-31T12:00:00Z", task="auto",
        files=FILES, targets=targets,
    )  # fmt: skip
    return parse_manifest(obj)


def reason_of(m, device=BOX, running="blobs", **kw):
    try:
        check_targets(m, device, running, **kw)
    except ModelUpdateError as exc:
        return exc.reason, str(exc)
    return None


def test_an_old_manifest_fits_any_box_but_not_another_model():
    old = manifest()
    assert (old.compatible, old.devices, old.groups, old.replaces) == ((), (), (), ())
    assert "compatible" not in old.raw  # empty targets are left out, not signed as []
    assert reason_of(old, DeviceIdentity()) is None
    assert reason_of(old, BOX) is None
    reason, message = reason_of(old, running="garagecam")
    assert reason == "incompatible" and "'garagecam'" in message and "replaces" in message


@pytest.mark.parametrize(
    ("targets", "device", "fits"),
    [
        ({"compatible": ["rpi4-coral-usb", "x86-pcie"]}, BOX, True),
        ({"compatible": ["x86-pcie"]}, BOX, False),
        ({"compatible": ["rpi4-coral-usb"]}, DeviceIdentity("", "door-1"), False),  # type unset
        ({"devices": ["door-1"]}, BOX, True),
        ({"devices": ["door-2"]}, BOX, False),
        ({"groups": ["north"]}, BOX, True),
        ({"groups": ["south"]}, BOX, False),
        ({"devices": ["door-2"], "groups": ["lobby"]}, BOX, True),  # either one
        ({"devices": ["door-1"], "groups": ["south"]}, BOX, True),
        ({"devices": ["door-2"], "groups": ["south"]}, BOX, False),
        ({"compatible": ["x86-pcie"], "devices": ["door-1"]}, BOX, False),  # all must hold
    ],
)
def test_device_type_device_and_group_targets(targets, device, fits):
    got = reason_of(manifest(**targets), device)
    assert (got is None) == fits, got
    if not fits:
        assert got[0] == "incompatible"


def test_a_model_change_needs_replaces_or_the_device_setting():
    garagecam = manifest("garagecam")
    assert reason_of(garagecam, running="blobs")[0] == "incompatible"
    assert reason_of(garagecam, running="blobs", allow_model_change=True) is None
    assert reason_of(manifest("garagecam", replaces=["blobs"]), running="blobs") is None
    assert reason_of(manifest("garagecam", replaces=["doorcam"]), running="blobs")[0] == (
        "incompatible"
    )
    # A configured model without a declared name: the first release names the box's model.
    assert reason_of(garagecam, running=None) is None


@pytest.mark.parametrize(
    "value",
    [[], ["a/b"], ["+"], [""], "rpi4", [1], ["x"] * 65, ["a", "a"], ["x" * 65]],
)
@pytest.mark.parametrize("key", ["compatible", "devices", "groups", "replaces"])
def test_bad_target_lists_are_bad_manifests(key, value):
    obj = build_manifest(
        name="blobs", version=1, created="2025-01-31T12:00:00Z", task="auto", files=FILES
    )
    obj[key] = value
    with pytest.raises(ModelUpdateError) as e:
        parse_manifest(obj)
    assert e.value.reason == "bad_manifest" and key in str(e.value)


def test_describe_targets():
    assert describe_targets(manifest()) == "any device"
    text = describe_targets(manifest(compatible=["rpi4-coral-usb"], groups=["lobby"]))
    assert text == "compatible=['rpi4-coral-usb'] groups=['lobby']"
