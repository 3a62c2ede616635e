"""The device-side update runner: queued commands and manifest-URL polling."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.agent import UpdateRunner, current_state
from edge_agent.updates.commands import build_update_command
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.polled import count_abandoned, handle_polled
from edge_agent.updates.recovery import RecoveryNote
from edge_agent.updates.signing import TrustedKeys
from edge_agent.updates.store import ModelStore
from edge_agent.updates.transport import DownloadSettings
from tests.support.model_states import States
from tests.support.updates_http import FileServer, Route
from tests.support.updates_release import make_release

KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def setup(tmp_path):
    states = States()
    settings = UpdateSettings(download=DownloadSettings(allow_http=True, retries=0))
    installer = UpdateInstaller(
        ModelStore(tmp_path / "state"), TrustedKeys([KEY.public_key()]), settings, progress=states
    )
    with FileServer() as server:
        yield tmp_path, installer, states, server


def publish(server, release):
    base = f"/{release.version}/"
    for name, data in release.files.items():
        server.add(base + name, data)
    return server.url(base)


def test_commands_run_in_order_on_the_runner(setup):
    tmp, installer, states, server = setup
    assert current_state(installer)["reason"] == "configured"
    runner = UpdateRunner(installer).start()
    try:
        for version in ("1.0.0", "2.0.0"):
            rel = make_release(tmp / "rel", KEY, version)
            payload = build_update_command(
                envelope=rel.envelope, base_url=publish(server, rel), request_id=f"r{version[0]}"
            )
            runner.handle("", payload, "edge/cam/cmd/model/update")
        states.matching(lambda s: s["state"] == "active" and s["request_id"] == "r2")
        runner.handle("", b'{"request_id": "rb"}', "edge/group/lobby/cmd/model/rollback")
        done = states.matching(lambda s: s["request_id"] == "rb" and s["state"] != "installing")
        assert (done["state"], done["version"]) == ("rolled_back", "1.0.0")
        runner.handle("model/update", b"{broken", "edge/cam/cmd/model/update")
        bad = states.matching(lambda s: s["state"] == "failed")
        assert bad["reason"] == "bad_command"
        runner.handle("", b"ignored: not a command topic", "edge/cam/status")
        runner.handle("reboot", b"", "edge/cam/cmd/reboot")
    finally:
        runner.stop()
    assert current_state(installer)["version"] == "1.0.0"


def test_polling_installs_newer_releases_only(setup):
    tmp, installer, states, server = setup
    v1 = make_release(tmp / "rel", KEY, "1.0.0")
    publish(server, v1)
    manifest = Route(body=(v1.dir / "manifest.json").read_bytes(), etag='"1"')
    url = server.add("/1.0.0/manifest.json", manifest)
    runner = UpdateRunner(installer, poll_url=url, poll_interval=0.1).start()
    try:
        states.matching(lambda s: s["state"] == "active" and s["version"] == "1.0.0")
        deadline = time.monotonic() + 10
        while sum(1 for p, _ in server.requests if p.endswith("manifest.json")) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        polls = [h for p, h in server.requests if p.endswith("manifest.json")]
        assert polls[-1].get("If-None-Match") == '"1"'  # answered 304: nothing to do
        v2 = make_release(tmp / "rel", KEY, "2.0.0")
        publish(server, v2)
        # The same URL now offers 2.0.0 whose files sit beside it in /1.0.0/.
        for name, data in v2.files.items():
            server.add(f"/1.0.0/{name}", data)
        manifest.body, manifest.etag = (v2.dir / "manifest.json").read_bytes(), '"2"'
        states.matching(lambda s: s["state"] == "active" and s["version"] == "2.0.0")
    finally:
        runner.stop()
    assert [s["state"] for s in states.items].count("failed") == 0
    assert installer.store.active(verify=True).version == "2.0.0"


def test_stop_cancels_a_running_download(setup):
    tmp, installer, states, server = setup
    rel = make_release(tmp / "rel", KEY, "1.0.0")
    base = publish(server, rel)
    server.routes["/1.0.0/model.tflite"] = Route(body=rel.files["model.tflite"], throttle=1.0)
    runner = UpdateRunner(installer).start()
    runner.handle(
        "", build_update_command(envelope=rel.envelope, base_url=base), "e/d/cmd/model/update"
    )
    states.matching(lambda s: s["state"] == "downloading")
    start = time.monotonic()
    runner.stop(timeout=10)
    assert time.monotonic() - start < 5
    assert states.matching(lambda s: s["state"] == "failed")["reason"] == "cancelled"
    assert installer.store.active() is None


def test_polling_retries_a_release_after_a_transient_failure(setup):
    tmp, installer, states, server = setup
    v1 = make_release(tmp / "rel", KEY, "1.0.0")
    publish(server, v1)
    server.routes["/1.0.0/model.tflite"] = Route(
        body=v1.files["model.tflite"], fail_times=2, fail_status=503
    )
    url = server.add(
        "/1.0.0/manifest.json", Route(body=(v1.dir / "manifest.json").read_bytes(), etag='"1"')
    )
    runner = UpdateRunner(installer, poll_url=url, poll_interval=0.1).start()
    try:
        states.matching(lambda s: s["state"] == "active" and s["version"] == "1.0.0")
    finally:
        runner.stop()
    failed = [s["reason"] for s in states.items if s["state"] == "failed"]
    assert failed == ["http_error", "http_error"], failed
    polls = [h for p, h in server.requests if p.endswith("manifest.json")]
    # Each failure left the manifest to be fetched again, not answered 304 "unchanged".
    assert [h.get("If-None-Match") for h in polls[:3]] == [None, None, None]


def test_a_polled_release_that_failed_its_health_check_is_not_tried_again_after_a_restart(
    setup,
):
    tmp, installer, states, server = setup
    v1, v2 = (make_release(tmp / "rel", KEY, v) for v in ("1.0.0", "2.0.0"))
    publish(server, v1)
    manifest = Route(body=(v1.dir / "manifest.json").read_bytes(), etag='"1"')
    url = server.add("/1.0.0/manifest.json", manifest)

    def health(release):  # 2.0.0's model fails its health check on this box
        if release.version == "2.0.0":
            raise ModelUpdateError("health_check_failed", "every frame failed")

    def device():  # one run of the daemon: its installer on the same state dir
        store, keys = installer.store, TrustedKeys([KEY.public_key()])
        settings = UpdateSettings(download=DownloadSettings(allow_http=True, retries=0))
        fresh = UpdateInstaller(ModelStore(store.root.parent), keys, settings, progress=states,
                                swap=health)  # fmt: skip
        return fresh, UpdateRunner(fresh, poll_url=url, poll_interval=0.1).start()

    def polls():
        return [h for p, h in server.requests if p.endswith("manifest.json")]

    first, runner = device()
    try:
        states.matching(lambda s: s["state"] == "active" and s["version"] == "1.0.0")
        for name, data in v2.files.items():  # the same URL now offers 2.0.0
            server.add(f"/1.0.0/{name}", data)
        manifest.body, manifest.etag = (v2.dir / "manifest.json").read_bytes(), '"2"'
        refused = states.matching(lambda s: s["reason"] == "health_check_failed")
        assert (refused["state"], refused["version"]) == ("rolled_back", "1.0.0")
    finally:
        runner.stop()
    downloads = sum(1 for p, _ in server.requests if p == "/1.0.0/model.tflite")
    before = len(polls())
    second, runner = device()  # restarted: no validators in memory
    try:
        deadline = time.monotonic() + 10
        # Fetched in full once, then asked only whether it changed: handled for good.
        while not any(h.get("If-None-Match") == '"2"' for h in polls()[before + 1 :]):
            assert time.monotonic() < deadline, polls()[before:]
            time.sleep(0.05)
        assert polls()[before].get("If-None-Match") is None
    finally:
        runner.stop()
    assert sum(1 for p, _ in server.requests if p == "/1.0.0/model.tflite") == downloads
    assert [s["reason"] for s in states.items].count("health_check_failed") == 1
    assert [s["version"] for s in states.items if s["state"] == "downloading"] == ["1.0.0", "2.0.0"]
    assert second.store.active().version == "1.0.0"


def test_a_polled_release_the_daemon_did_not_survive_twice_is_left_alone(setup, monkeypatch):
    """Startup recovery found 2.0.0 still on trial (the daemon died during it) at two
    starts in a row: the poll stops installing it, as a refusal for good. An install of
    it that is confirmed clears the count."""
    tmp, installer, states, server = setup
    v2 = make_release(tmp / "rel", KEY, "2.0.0")
    body = (v2.dir / "manifest.json").read_bytes()
    url = server.add("/2.0.0/manifest.json", Route(body=body))
    label = f"{v2.envelope['manifest']['name']}@2.0.0"
    installs = []

    def install(command):  # the run ends during the trial
        installs.append(command)
        raise ModelUpdateError("interrupted", "the daemon stopped")

    monkeypatch.setattr(installer, "install", install)
    store = installer.store

    def start(on_trial: bool):
        store.recovery = RecoveryNote("trial_abandoned", "it stopped", label) if on_trial else None
        count_abandoned(store)
        return handle_polled(installer, body, url)

    assert start(on_trial=True) == "interrupted" and len(installs) == 1  # once may be bad luck
    assert start(on_trial=True) is None
    assert len(installs) == 1, "installed again after two starts found it on trial"
    entries = json.loads((store.root / "polled_refused.json").read_text())
    assert [(e["release"], e["count"]) for e in entries] == [(label, 2)]
    # One start that found it on trial, then an install that is confirmed: the count is gone.
    (store.root / "polled_refused.json").write_text("[]")
    start(on_trial=True)
    monkeypatch.setattr(installer, "install", installs.append)
    assert start(on_trial=False) is None and len(installs) == 3
    assert json.loads((store.root / "polled_refused.json").read_text()) == []
