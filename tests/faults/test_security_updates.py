"""Security: a command from the operator's own account still cannot install an unsigned,
tampered or foreign-signed model.

The operator account may publish commands (the broker's ACL allows it), so these tests
are what stands between a stolen operator password and the fleet's cameras: the device
checks the Ed25519 signature against its ``updates.trusted_keys`` *before* it downloads
anything, reports ``failed`` with ``unsigned`` / ``bad_signature`` / ``untrusted_key`` on
its retained ``model`` topic, installs nothing, and keeps publishing results from the
model it was running. The release files are served (tests/support/updates_http.py), so
a device that skipped the check would have fetched them: the server's hit counts show
it did not.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from edge_agent.updates.commands import build_update_command
from tests.faults.conftest import GROUP
from tests.support.daemon import DEVICE_ID, PREFIX
from tests.support.updates_release import Release, fake_tflite, make_release

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

DEVICE_UPDATE = f"{PREFIX}/{DEVICE_ID}/cmd/model/update"
GROUP_UPDATE = f"{PREFIX}/group/{GROUP}/cmd/model/update"
CONFIGURED_MODEL = "color_blobs.tflite"


def serve(server, release: Release, tag: str) -> str:
    """Serve a release's files and envelope under /tag/; the directory URL."""
    for name, data in release.files.items():
        server.add(f"/{tag}/{name}", data)
    server.add(f"/{tag}/manifest.json", json.dumps(release.envelope).encode())
    return server.url(f"/{tag}/")


def file_hits(server, tag: str) -> int:
    """Requests for a release's files (the envelope not counted)."""
    return sum(
        r.hits
        for path, r in server.routes.items()
        if path.startswith(f"/{tag}/") and not path.endswith("manifest.json")
    )


def send(broker, topic: str, payload: bytes) -> None:
    """Publish as the operator and check the broker accepted it."""
    operator = broker.session("operator")
    try:
        assert str(operator.publish(topic, payload)) == "Success"
    finally:
        operator.close()


def state_for(monitor, topics, request_id: str, timeout: float = 20) -> dict:
    """The terminal state the device reported for a request."""
    return monitor.wait_for(
        topics.model,
        lambda m: (
            m.json().get("request_id") == request_id
            and m.json()["state"] in ("failed", "active", "rolled_back")
        ),
        timeout=timeout,
    ).json()


def installed(state_dir: Path) -> list[str]:
    """Release directories in the device's model store."""
    models = state_dir / "models"
    return sorted(
        str(p.relative_to(models)) for p in models.glob("*/*") if not p.name.startswith(".")
    )


def test_unsigned_tampered_and_foreign_models_are_rejected_before_download(
    tmp_path, secure_daemon, secure_broker, monitor, release_keys, release_server
):
    topics, server = secure_daemon.topics, release_server
    root = tmp_path / "releases"
    before = len(monitor.on(topics.results))

    unsigned = make_release(root, None, "2")
    unsigned_url = serve(server, unsigned, "unsigned")
    send(
        secure_broker,
        DEVICE_UPDATE,
        build_update_command(
            envelope=unsigned.envelope, base_url=unsigned_url, request_id="sec-unsigned"
        ),
    )

    # Signed by the trusted key, then the model entry pointed at other bytes.
    tampered = make_release(root, release_keys.trusted, "3")
    evil = fake_tflite(seed=666)
    envelope = copy.deepcopy(tampered.envelope)
    entry = next(f for f in envelope["manifest"]["files"] if f["role"] == "model")
    entry.update(sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))
    tampered.files[entry["name"]] = evil
    tampered_url = serve(server, Release(tampered.dir, envelope, tampered.files), "tampered")
    send(
        secure_broker,
        GROUP_UPDATE,  # group commands go through the same checks
        build_update_command(envelope=envelope, base_url=tampered_url, request_id="sec-tampered"),
    )

    # Properly signed, by a key the device does not trust; fetched by manifest URL.
    foreign = make_release(root, release_keys.untrusted, "4")
    foreign_url = serve(server, foreign, "foreign")
    send(
        secure_broker,
        DEVICE_UPDATE,
        build_update_command(manifest_url=foreign_url + "manifest.json", request_id="sec-foreign"),
    )

    reasons = {
        rid: state_for(monitor, topics, rid)
        for rid in ("sec-unsigned", "sec-tampered", "sec-foreign")
    }
    assert {rid: (s["state"], s["reason"]) for rid, s in reasons.items()} == {
        "sec-unsigned": ("failed", "unsigned"),
        "sec-tampered": ("failed", "bad_signature"),
        "sec-foreign": ("failed", "untrusted_key"),
    }
    assert server.routes["/foreign/manifest.json"].hits == 1  # read, then refused
    assert {tag: file_hits(server, tag) for tag in ("unsigned", "tampered", "foreign")} == {
        "unsigned": 0,
        "tampered": 0,
        "foreign": 0,
    }
    assert installed(secure_daemon.dir / "state") == []

    # Results keep flowing, from the model the device was running all along.
    after = monitor.wait_count(topics.results, before + 10, timeout=20)[before:]
    assert {m.json()["model"]["file"].rsplit("/", 1)[-1] for m in after} == {CONFIGURED_MODEL}
    status = monitor.on(topics.status)[-1].json()
    assert status["model"]["file"].endswith(CONFIGURED_MODEL), status
    print(f"FIGURE signed_updates: rejected={len(reasons)} files_downloaded=0")


def test_a_signed_release_that_will_not_run_is_refused_and_the_old_model_stays(
    tmp_path, secure_daemon, secure_broker, monitor, release_keys, release_server
):
    # The control for the test above: with a valid signature the device does download,
    # then its validator (a separate worker process) refuses bytes that are no model.
    topics, server = secure_daemon.topics, release_server
    release = make_release(tmp_path / "releases", release_keys.trusted, "5")
    url = serve(server, release, "signed-broken")
    before = len(monitor.on(topics.results))
    send(
        secure_broker,
        DEVICE_UPDATE,
        build_update_command(envelope=release.envelope, base_url=url, request_id="sec-signed"),
    )
    state = state_for(monitor, topics, "sec-signed", timeout=30)
    assert (state["state"], state["reason"]) == ("failed", "incompatible"), state
    assert (state["name"], state["version"]) == ("cls", "5")
    assert file_hits(server, "signed-broken") == len(release.files)
    assert installed(secure_daemon.dir / "state") == []
    after = monitor.wait_count(topics.results, before + 5, timeout=20)[before:]
    assert {m.json()["model"]["file"].rsplit("/", 1)[-1] for m in after} == {CONFIGURED_MODEL}
