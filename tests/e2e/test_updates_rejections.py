"""Tier 3: bad model releases pushed to a running daemon are refused; the old model runs on.

One daemon runs the demo model from an installed release ``demo@1.0.0``; then a series
of bad update commands arrives over MQTT, each for a release that must be refused at a
different gate: signature, replay, size, download, file checks, and the daemon's own
validator (adapter fit, allocation, Edge TPU-only without a CPU twin). Each refusal
must be published as the retained ``failed`` state with its reason, and the results
must keep coming from ``demo@1.0.0``. The library tests cover every gate in isolation;
this shows they are wired into the daemon, over MQTT, with real files and models.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.paths import SHARED, fixture_model
from tests.support.updates_e2e import (
    DEMO,
    Operator,
    envelope_of,
    group_processes,
    pack_release,
    retained,
    serve_dir,
    states_of,
    updates_config,
    version_of,
    wait_results,
    wait_terminal,
    write_public_key,
)
from tests.support.updates_http import FileServer
from tests.support.updates_release import fake_tflite, make_release

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

ACTIVE = ("demo", "1.0.0")
MAX_SIZE_MB = 1


class Case(NamedTuple):
    """One bad release: how to build and serve it, and what the device must say."""

    name: str
    reason: str
    build: Callable[[Any], tuple[dict, str]]  # Lab -> (envelope, base_url)
    labelled: bool = True  # the failed state names the release (manifest was readable)


class Lab:
    """Keys, the file server and where forged releases are written."""

    def __init__(self, root: Path, key: Ed25519PrivateKey, server: FileServer):
        self.root, self.key, self.server = root, key, server
        self.model = (DEMO / "color_blobs.tflite").read_bytes()
        self.labels = (DEMO / "labels.txt").read_bytes()

    def forged(self, version: str, *, key: Any = "trusted", **kw: Any):
        """A release via make_release (files served as written unless changed after)."""
        kw.setdefault(
            "files",
            {"color_blobs.tflite": ("model", self.model), "labels.txt": ("labels", self.labels)},
        )
        kw.setdefault("task", "detection-ssd")
        signer = self.key if key == "trusted" else key
        return make_release(self.root / "forged", signer, version, name="demo", **kw)

    def serve(self, release: Any) -> str:
        """Serve a forged release's files; its base URL."""
        base = f"/f/{release.version}/"
        for name, data in release.files.items():
            if "/" not in name:
                self.server.add(base + name, data)
        return self.server.url(base)

    def packed(self, version: str, model: Path, **kw: Any) -> tuple[dict, str]:
        """A release made by ``pack``, served: (envelope, base_url)."""
        rel = pack_release(self.root / "packed", self.key, "demo", version, model, **kw)
        return envelope_of(rel), serve_dir(self.server, rel)

    def packed_raw(self, version: str, model: Path) -> tuple[dict, str]:
        """``pack`` refuses a non-TFLite model, so this one is forged with its bytes."""
        rel = self.forged(version, files={model.name: ("model", model.read_bytes())})
        return rel.envelope, self.serve(rel)


def sha256_mismatch(lab: Lab) -> tuple[dict, str]:
    rel = lab.forged("2.0.1")
    url = lab.serve(rel)
    tampered = bytearray(lab.model)
    tampered[len(tampered) // 2] ^= 0xFF  # same size, one byte flipped
    lab.server.add(f"/f/{rel.version}/color_blobs.tflite", bytes(tampered))
    return rel.envelope, url


def unsigned(lab: Lab) -> tuple[dict, str]:
    rel = lab.forged("2.0.2", key=None)
    return rel.envelope, lab.serve(rel)


def bad_signature(lab: Lab) -> tuple[dict, str]:
    rel = lab.forged("2.0.3")
    envelope = copy.deepcopy(rel.envelope)
    envelope["manifest"]["adapter"] = {"threshold": 0.05}  # edited after signing
    return envelope, lab.serve(rel)


def untrusted_key(lab: Lab) -> tuple[dict, str]:
    rel = lab.forged("2.0.4", key=Ed25519PrivateKey.generate())
    return rel.envelope, lab.serve(rel)


def oversize(lab: Lab) -> tuple[dict, str]:
    big = fake_tflite(MAX_SIZE_MB * 1024 * 1024 + 4096, seed=5)
    rel = lab.forged("2.0.5", files={"big.tflite": ("model", big)})
    return rel.envelope, lab.serve(rel)


def not_tflite(lab: Lab) -> tuple[dict, str]:
    return lab.packed_raw("2.0.6", fixture_model("not_a_model.tflite"))


def classifier_as_yolo(lab: Lab) -> tuple[dict, str]:
    return lab.packed(
        "2.0.7",
        fixture_model("color_uint8.tflite"),
        labels=fixture_model("color_labels.txt"),
        task="detection-yolo",
    )


def ssd_as_classifier(lab: Lab) -> tuple[dict, str]:
    return lab.packed("2.0.8", fixture_model("ssd_postprocess.tflite"), task="classification")


def fails_to_allocate(lab: Lab) -> tuple[dict, str]:
    return lab.packed("2.0.9", SHARED / "models" / "model_invoking_error.tflite")


def orphan_edgetpu(lab: Lab) -> tuple[dict, str]:
    return lab.packed("2.0.10", fixture_model("orphan_edgetpu.tflite"), task="classification")


def path_traversal(lab: Lab) -> tuple[dict, str]:
    rel = lab.forged("2.0.11", files={"../../evil.tflite": ("model", lab.model)})
    return rel.envelope, lab.server.url("/f/2.0.11/")


def http_404(lab: Lab) -> tuple[dict, str]:
    rel = lab.forged("2.0.12")
    return rel.envelope, lab.server.url("/nowhere/")  # nothing is served there


def replay_same(lab: Lab) -> tuple[dict, str]:
    rel = lab.forged("1.0.0")  # the active version again, validly signed
    return rel.envelope, lab.serve(rel)


def replay_older(lab: Lab) -> tuple[dict, str]:
    rel = lab.forged("0.9.0")
    return rel.envelope, lab.serve(rel)


CASES = [
    Case("sha256 mismatch", "sha256_mismatch", sha256_mismatch),
    Case("unsigned", "unsigned", unsigned, labelled=False),
    Case("bad signature", "bad_signature", bad_signature, labelled=False),
    Case("untrusted key", "untrusted_key", untrusted_key, labelled=False),
    Case("oversize", "too_large", oversize),
    Case("not a TFLite file", "not_tflite", not_tflite),
    Case("classifier declared detection-yolo", "incompatible", classifier_as_yolo),
    Case("SSD outputs declared classification", "incompatible", ssd_as_classifier),
    Case("fails to allocate", "incompatible", fails_to_allocate),
    Case("Edge TPU-only, no CPU twin", "incompatible", orphan_edgetpu),
    Case("path traversal in a file name", "bad_manifest", path_traversal, labelled=False),
    Case("HTTP 404", "http_error", http_404),
    Case("replay of the active version", "not_newer", replay_same),
    Case("older version", "not_newer", replay_older),
]


def test_bad_releases_are_refused_and_the_old_model_keeps_running(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    cases = CASES
    if not (SHARED / "models" / "model_invoking_error.tflite").is_file():
        cases = [c for c in CASES if c.build is not fails_to_allocate]
    key = Ed25519PrivateKey.generate()
    public = write_public_key(key, tmp_path / "release.pub")
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        updates=updates_config(public, max_size_mb=MAX_SIZE_MB),
    )
    sub, topics = mqtt_subscriber, daemon.topics
    wait_results(sub, topics.results, 5, timeout=30, daemon=daemon)
    seconds: dict[str, float] = {}
    with FileServer() as server:
        lab = Lab(tmp_path, key, server)
        operator = Operator(mqtt_broker.host, mqtt_broker.port)
        try:
            envelope, url = lab.packed(
                "1.0.0", DEMO / "color_blobs.tflite", labels=DEMO / "labels.txt",
                task="detection-ssd",
            )  # fmt: skip
            rid = operator.update(topics.base, envelope, url)
            assert wait_terminal(sub, topics.model, rid)["state"] == "active"
            wait_results(sub, topics.results, 5, where=lambda r: version_of(r) == ACTIVE)
            processes = group_processes(daemon.pid)
            for case in cases:
                envelope, url = case.build(lab)
                n = len(sub.on(topics.results))
                sent = time.monotonic()
                rid = operator.update(topics.base, envelope, url)
                state = wait_terminal(sub, topics.model, rid, timeout=30)
                seconds[case.name] = time.monotonic() - sent
                assert (state["state"], state["reason"]) == ("failed", case.reason), (
                    f"{case.name}: {state}"
                )
                # The retained state still says what keeps serving.
                assert state["serving"] == {"name": ACTIVE[0], "version": ACTIVE[1]}, state
                if case.labelled:
                    assert (state["name"], state["version"]) == (
                        "demo",
                        envelope["manifest"]["version"],
                    ), f"{case.name}: {state}"
                steps = [s["state"] for s in states_of(sub, topics.model, rid)]
                assert "active" not in steps and "installing" not in steps, f"{case.name}: {steps}"
                assert retained(mqtt_broker, topics.model) == state, case.name
                # Frames go on through the old model: no restart, no switch.
                later = wait_results(sub, topics.results, 5, after=n, daemon=daemon)
                assert {version_of(r) for r in later} == {ACTIVE}, case.name
            # The validator's workers are gone again: no process left behind.
            assert group_processes(daemon.pid) == processes
        finally:
            operator.close()
    assert (daemon.dir / "state/models/demo/1.0.0").is_dir()
    installed = sorted(p.name for p in (daemon.dir / "state/models/demo").iterdir())
    assert installed == ["1.0.0"], installed
    assert not (tmp_path / "evil.tflite").exists()
    assert daemon.stop(timeout=10) == 0
    print(
        "rejections (command -> failed): "
        + ", ".join(f"{name} {t:.2f}s" for name, t in seconds.items())
    )
