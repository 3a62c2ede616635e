"""``edge-agent model pack|verify|push`` with release targets, as an operator runs them."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import ModelUpdateError
from edge_agent.publishing.settings import MqttSettings
from edge_agent.tools.release.operator import pack
from edge_agent.tools.release.push import push
from tests.support.paths import REPO

MODEL = REPO / "models" / "demo" / "color_blobs.tflite"


@pytest.fixture
def packed(tmp_path, edge_daemon):
    run = edge_daemon.run_cli
    keygen = run("model", "keygen", "--private", "k.pem", "--public", "k.pub", cwd=tmp_path)
    assert keygen.returncode == 0, keygen.stderr
    out = run(
        "model", "pack", "--out", "rel", "--name", "garagecam", "--version", "1.0.0",
        "--model", str(MODEL), "--key", "k.pem", "--compatible", "rpi4-coral-usb",
        "--compatible", "x86-pcie", "--target-device", "door-1", "--target-group", "lobby",
        "--replaces", "blobs", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "for compatible=['rpi4-coral-usb', 'x86-pcie'] devices=['door-1']" in out.stdout
    return tmp_path / "rel", run


def test_verify_shows_the_targets_and_checks_a_box(packed, tmp_path):
    rel, run = packed
    shown = run("model", "verify", str(rel), "--key", "k.pub", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "targets: compatible=['rpi4-coral-usb', 'x86-pcie'] devices=['door-1'] " in shown.stdout
    assert "groups=['lobby'] replaces=['blobs']" in shown.stdout
    fits = run(
        "model", "verify", str(rel), "--key", "k.pub", "--device-type", "x86-pcie",
        "--device-id", "shed-2", "--group", "lobby", "--running-model", "blobs", cwd=tmp_path,
    )  # fmt: skip
    assert fits.returncode == 0 and "(fits the given box)" in fits.stdout, fits.stderr
    for box, why in (
        (["--device-type", "rpi5-hailo", "--group", "lobby"], "device types"),
        (["--device-type", "x86-pcie", "--device-id", "shed-2"], "targets"),
        (
            ["--device-type", "x86-pcie", "--group", "lobby", "--running-model", "doorcam"],
            "doorcam",
        ),
    ):
        refused = run("model", "verify", str(rel), "--key", "k.pub", *box, cwd=tmp_path)
        assert refused.returncode != 0, refused.stdout
        assert "incompatible" in refused.stderr and why in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("targets", "audience"),
    [
        ({"groups": ["lobby"]}, {"group": "garage"}),
        ({"devices": ["door-1"]}, {"devices": ["door-1", "shed-2"]}),
    ],
)
def test_push_refuses_an_audience_the_release_does_not_target(tmp_path, targets, audience):
    key = Ed25519PrivateKey.generate()
    rel = pack(tmp_path / "rel", name="blobs", version="2.0.0", model=MODEL, private_key=key,
               targets=targets)  # fmt: skip
    # Refused before any broker is contacted (nothing listens on port 1).
    broker = MqttSettings(host="127.0.0.1", port=1, connect_timeout=1)
    with pytest.raises(ModelUpdateError) as e:
        push(rel, broker=broker, prefix="edge", base_url="https://x/", **audience)
    assert e.value.reason == "incompatible", e.value
