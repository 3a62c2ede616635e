"""The installer end to end: a real loopback HTTP server, real files, a real store.

Every rejection asserts the reason code AND that the store (active pointer, installed
files) is byte-for-byte what it was before the attempt.
"""

from __future__ import annotations

import copy
import json
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.commands import build_update_command
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.signing import TrustedKeys, sign_manifest
from edge_agent.updates.store import ModelStore
from edge_agent.updates.transport import DownloadSettings
from tests.support.paths import shared_file
from tests.support.updates_http import FileServer, Route
from tests.support.updates_release import fake_tflite, make_release, snapshot

KEY = Ed25519PrivateKey.generate()
FAST = DownloadSettings(
    allow_http=True, read_timeout=0.5, retries=1, backoff_initial=0.01, progress_interval=0
)


class Env:
    """A device: store + installer + the states it published; plus the file server."""

    def __init__(self, tmp_path, server, **settings):
        self.tmp, self.server = tmp_path, server
        self.store = ModelStore(tmp_path / "state", keep_versions=2)
        self.states = []
        self.validated = []
        self.swapped = []
        self.settings = UpdateSettings(download=settings.pop("download", FAST), **settings)
        self.installer = UpdateInstaller(
            self.store,
            TrustedKeys([KEY.public_key()]),
            self.settings,
            validator=lambda path, m: self.validated.append((path.name, m.label)),
            progress=self.states.append,
            swap=self.swapped.append,
        )

    def publish(self, release, prefix="/r"):
        """Serve a release's files under /r/<name>/<version>/; returns the base URL."""
        base = f"{prefix}/{release.dir.parent.name}/{release.version}/"
        for name, data in release.files.items():
            self.server.add(base + name, data)
        self.server.add(base + "manifest.json", (release.dir / "manifest.json").read_bytes())
        return self.server.url(base)

    def release(self, version, **kw):
        return make_release(self.tmp / "releases", kw.pop("key", KEY), version, **kw)

    def command(self, release, **kw):
        if "base_url" not in kw:
            kw["base_url"] = self.publish(release)
        kw.setdefault("request_id", "req-1")
        return build_update_command(envelope=release.envelope, **kw)

    def install(self, release, **kw):
        return self.installer.install(self.command(release, **kw))


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


@pytest.fixture
def env(tmp_path, server):
    env = Env(tmp_path, server)
    env.install(env.release("1.0.0"))
    env.states.clear()
    return env


def test_installs_real_edgetpu_model_with_cpu_twin(tmp_path, server):
    env = Env(tmp_path, server)
    files = {
        "mobilenet_v1_0.25_128_quant_edgetpu.tflite": (
            "model",
            shared_file("models/mobilenet_v1_0.25_128_quant_edgetpu.tflite").read_bytes(),
        ),
        "mobilenet_v1_0.25_128_quant.tflite": (
            "cpu_model",
            shared_file("models/mobilenet_v1_0.25_128_quant.tflite").read_bytes(),
        ),
        "imagenet_labels.txt": ("labels", shared_file("models/imagenet_labels.txt").read_bytes()),
    }
    rel = env.release("1.0.0", name="mobilenet", files=files)
    release = env.install(rel)
    assert release.label == "mobilenet@1.0.0"
    assert release.file("model").name == "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    assert release.file("cpu_model").read_bytes() == files["mobilenet_v1_0.25_128_quant.tflite"][1]
    assert env.store.recover() == env.store.active(verify=True)
    assert env.store.active().path == tmp_path / "state/models/mobilenet/1.0.0"
    assert [label for _, label in env.validated] == ["mobilenet@1.0.0"]
    assert env.swapped == [release]
    states = [s["state"] for s in env.states]
    assert states[0] == "downloading" and states[-3:] == ["verifying", "installing", "active"]
    percents = [s["percent"] for s in env.states if s["state"] == "downloading"]
    assert percents == sorted(percents) and percents[0] == 0 and max(percents) <= 99
    assert len(percents) > 3  # ~1.3 MB reported in several steps
    assert {s["request_id"] for s in env.states} == {"req-1"}
    assert env.states[-1] == {
        "state": "active",
        "name": "mobilenet",
        "version": "1.0.0",
        "percent": 100,
        "reason": None,
        "message": None,
        "request_id": "req-1",
    }


def test_upgrade_keeps_previous_for_rollback(env):
    v2 = env.install(env.release("1.1.0"))
    ptr = env.store.pointer()
    assert (ptr["version"], ptr["previous"]["version"]) == ("1.1.0", "1.0.0")
    assert v2.path.is_dir()
    now = env.installer.rollback(b'{"request_id": "rb-1"}')
    assert now.version == "1.0.0" and env.store.pointer()["previous"] is None
    assert not v2.path.exists()  # the version rolled back from is deleted
    assert env.states[-1]["state"] == "rolled_back"
    assert env.states[-1]["from_version"] == "cls@1.1.0"
    assert env.states[-1]["request_id"] == "rb-1"
    assert env.swapped[-1].version == "1.0.0"
    with pytest.raises(ModelUpdateError) as e:
        env.installer.rollback()
    assert e.value.reason == "no_previous"


def test_install_by_manifest_url(env):
    rel = env.release("2.0.0")
    base = env.publish(rel)
    cmd = json.dumps({"manifest_url": base + "manifest.json", "request_id": "u1"}).encode()
    assert env.installer.install(cmd).version == "2.0.0"


def _reject(env, reason, call, *, requests=None):
    """Run a failing install; check reason, failed state, untouched store, no leftovers."""
    before = snapshot(env.store.root)
    ptr = env.store.pointer()
    n_requests = len(env.server.requests)
    with pytest.raises(ModelUpdateError) as e:
        call()
    assert e.value.reason == reason, str(e.value)
    assert env.states[-1]["state"] == "failed" and env.states[-1]["reason"] == reason
    assert env.store.pointer() == ptr
    assert snapshot(env.store.root) == before
    assert not any((env.store.root / ".staging").iterdir())
    assert env.store.active(verify=True).version == "1.0.0"
    if requests is not None:
        assert len(env.server.requests) - n_requests == requests
    return e.value


def test_sha256_mismatch(env):
    rel = env.release("2.0.0")
    base = env.publish(rel)
    env.server.add("/r/cls/2.0.0/model.tflite", fake_tflite(seed=999))  # same size, other bytes
    _reject(env, "sha256_mismatch", lambda: env.installer.install(env.command(rel, base_url=base)))


def test_unsigned(env):
    rel = env.release("2.0.0", key=None)
    _reject(env, "unsigned", lambda: env.install(rel), requests=0)


def test_bad_signature(env):
    rel = env.release("2.0.0")
    tampered = copy.deepcopy(rel.envelope)
    tampered["manifest"]["adapter"]["top_k"] = 5
    base = env.publish(rel)
    cmd = build_update_command(envelope=tampered, base_url=base)
    _reject(env, "bad_signature", lambda: env.installer.install(cmd), requests=0)


def test_untrusted_key(env):
    rel = env.release("2.0.0", key=Ed25519PrivateKey.generate())
    _reject(env, "untrusted_key", lambda: env.install(rel), requests=0)


def test_oversize_manifest_entry_is_rejected_before_downloading(tmp_path, server):
    env = Env(tmp_path, server, max_file_bytes=1000)
    rel = env.release("2.0.0", files={"m.tflite": ("model", fake_tflite(5000))})
    with pytest.raises(ModelUpdateError) as e:
        env.install(rel)
    assert e.value.reason == "too_large"
    assert server.requests == []


def test_server_sends_more_than_the_manifest_says(env):
    rel = env.release("2.0.0")
    base = env.publish(rel)
    env.server.add("/r/cls/2.0.0/model.tflite", rel.files["model.tflite"] + b"extra")
    _reject(env, "too_large", lambda: env.installer.install(env.command(rel, base_url=base)))


def test_truncated_download(env):
    rel = env.release("2.0.0")
    base = env.publish(rel)
    env.server.routes["/r/cls/2.0.0/model.tflite"] = Route(
        body=rel.files["model.tflite"], cut_after=100, cut_times=99, ignore_range=True
    )
    _reject(env, "truncated", lambda: env.installer.install(env.command(rel, base_url=base)))


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors(env, status):
    rel = env.release("2.0.0")
    base = env.publish(rel)
    env.server.routes["/r/cls/2.0.0/labels.txt"] = Route(status=status)
    err = _reject(env, "http_error", lambda: env.installer.install(env.command(rel, base_url=base)))
    assert f"HTTP {status}" in str(err)


def test_timeout(env):
    rel = env.release("2.0.0")
    base = env.publish(rel)
    env.server.routes["/r/cls/2.0.0/model.tflite"] = Route(body=b"x", stall=20)
    _reject(env, "timeout", lambda: env.installer.install(env.command(rel, base_url=base)))


def test_not_a_tflite_file(env):
    rel = env.release("2.0.0", files={"model.tflite": ("model", b"PK\x03\x04 a zip, not a model")})
    _reject(env, "not_tflite", lambda: env.install(rel))


def test_path_traversal_in_a_signed_manifest(env):
    rel = env.release("2.0.0", files={"../../evil.tflite": ("model", fake_tflite())})
    cmd = build_update_command(envelope=rel.envelope, base_url=env.server.url("/r/"))
    _reject(env, "bad_manifest", lambda: env.installer.install(cmd), requests=0)
    assert not (env.tmp / "evil.tflite").exists()


@pytest.mark.parametrize("version", ["0.9.0", "1.0.0-rc.1", "1.0.0+rebuild"])
def test_not_newer(env, version):
    rel = env.release(version)
    _reject(env, "not_newer", lambda: env.install(rel), requests=0)


def test_the_active_release_again_is_already_active(env):
    # A repeated command (QoS 1 redelivery, an operator's retry) is not a replay.
    n = len(env.server.requests)
    assert env.install(env.release("1.0.0"), request_id="again").version == "1.0.0"
    assert (env.states[-1]["state"], env.states[-1]["reason"]) == ("active", "already_active")
    assert env.states[-1]["request_id"] == "again"
    assert len(env.server.requests) == n


def test_the_active_version_with_other_contents_is_not_newer(env):
    rel = env.release("1.0.0", files={"model.tflite": ("model", fake_tflite(seed=99))})
    _reject(env, "not_newer", lambda: env.install(rel), requests=0)


def test_an_old_release_of_another_name_is_a_replay(tmp_path, server):
    # blobs@1 -> blobs@2 -> doorcam@1: replaying the signed blobs@1 (or blobs@2) must not
    # bring it back just because the active release has another name (the box allows
    # model changes here; targets are tested in test_updates_targets.py).
    env = Env(tmp_path, server, allow_model_change=True)
    old = env.release("1.0.0", name="blobs")
    env.install(old)
    env.install(env.release("2.0.0", name="blobs"))
    env.install(env.release("1.0.0", name="doorcam"))
    for replay in (old, env.release("2.0.0", name="blobs")):
        n = len(env.server.requests)
        with pytest.raises(ModelUpdateError) as e:
            env.install(replay)
        assert e.value.reason == "not_newer" and "blobs@2.0.0 installed before" in str(e.value)
        assert len(env.server.requests) == n  # refused before any download
    assert env.store.active().label == "doorcam@1.0.0"
    env.install(env.release("3.0.0", name="blobs"))  # a newer one is fine
    assert env.store.active().label == "blobs@3.0.0"


def test_force_needs_the_device_to_allow_it(env):
    rel = env.release("0.9.0")
    _reject(env, "bad_command", lambda: env.install(rel, force=True), requests=0)


def test_forced_downgrade_and_reuse_of_installed_release(tmp_path, server):
    env = Env(tmp_path, server, allow_force=True)
    env.install(env.release("1.0.0"))
    env.install(env.release("2.0.0"))
    n = len(server.requests)
    old = make_release(tmp_path / "releases", KEY, "1.0.0")  # identical to the installed one
    assert env.install(old, force=True).version == "1.0.0"
    assert len(server.requests) == n  # still installed (previous): no download at all
    assert env.store.pointer()["previous"]["version"] == "2.0.0"


def test_host_not_allowed(tmp_path, server):
    env = Env(tmp_path, server, download=DownloadSettings(allow_http=True, allowed_hosts=("x.y",)))
    rel = env.release("2.0.0")
    with pytest.raises(ModelUpdateError) as e:
        env.install(rel)
    assert e.value.reason == "host_not_allowed" and server.requests == []
    assert env.states[-1]["reason"] == "host_not_allowed"


def test_plain_http_without_allow_http(tmp_path, server):
    env = Env(tmp_path, server, download=DownloadSettings())
    with pytest.raises(ModelUpdateError) as e:
        env.install(env.release("2.0.0"))
    assert e.value.reason == "insecure_url" and server.requests == []


def test_validator_rejection(env):
    def incompatible(path, manifest):
        assert (path / "model.tflite").is_file()  # the validator sees the staged files
        raise ModelUpdateError("incompatible", "edgetpu-only model, no TPU, no CPU twin")

    env.installer.validator = incompatible
    err = _reject(env, "incompatible", lambda: env.install(env.release("2.0.0")))
    assert "no TPU" in str(err)


def test_validator_crash_is_incompatible(env):
    def fails_to_invoke(path, manifest):
        raise RuntimeError("Encountered unresolved custom op: edgetpu-custom-op")

    env.installer.validator = fails_to_invoke
    err = _reject(env, "incompatible", lambda: env.install(env.release("2.0.0")))
    assert "unresolved custom op" in str(err)


def test_agent_too_old(env):
    rel = env.release("2.0.0", changes={"min_agent_version": "99.0.0"})
    _reject(env, "agent_too_old", lambda: env.install(rel), requests=0)


def test_failed_hot_swap_rolls_back(env):
    def swap(release):
        if release.version == "2.0.0":
            raise ModelUpdateError("health_check_failed", "golden output differs by 37")
        env.swapped.append(release)

    env.installer.swap = swap
    with pytest.raises(ModelUpdateError) as e:
        env.install(env.release("2.0.0"))
    assert e.value.reason == "health_check_failed"
    assert env.store.active(verify=True).version == "1.0.0"
    assert not (env.store.root / "cls/2.0.0").exists()
    last = env.states[-1]
    assert (last["state"], last["reason"], last["version"]) == (
        "rolled_back",
        "health_check_failed",
        "1.0.0",
    )
    assert last["from_version"] == "cls@2.0.0"
    assert [s["state"] for s in env.states].count("failed") == 0


def test_one_update_at_a_time(env):
    gate, entered = threading.Event(), threading.Event()

    def slow_validator(path, manifest):
        entered.set()
        gate.wait(10)

    env.installer.validator = slow_validator
    rel2, rel3 = env.release("2.0.0"), env.release("3.0.0")
    cmd2, cmd3 = env.command(rel2), env.command(rel3)
    worker = threading.Thread(target=env.installer.install, args=(cmd2,))
    worker.start()
    assert entered.wait(10)
    with pytest.raises(ModelUpdateError) as e:
        env.installer.install(cmd3)
    assert e.value.reason == "busy"
    gate.set()
    worker.join(10)
    assert env.store.active().version == "2.0.0"


def test_bad_payload_is_reported_failed(env):
    with pytest.raises(ModelUpdateError) as e:
        env.installer.install(b'{"manifest": 5}')
    assert e.value.reason == "bad_command"
    assert env.states[-1]["state"] == "failed" and env.states[-1]["name"] is None


def test_pruning_keeps_active_and_newest(tmp_path, server):
    env = Env(tmp_path, server)
    env.store.keep_versions = 1
    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        env.install(env.release(v))
    assert sorted(p.name for p in (env.store.root / "cls").iterdir()) == ["1.2.0", "1.3.0"]
    env.installer.rollback()
    assert sorted(p.name for p in (env.store.root / "cls").iterdir()) == ["1.2.0"]


def test_progress_callback_errors_do_not_break_installs(tmp_path, server):
    env = Env(tmp_path, server)

    def broken(state):
        raise RuntimeError("mqtt down")

    env.installer._progress = broken
    assert env.install(env.release("1.0.0")).version == "1.0.0"


def test_unsigned_allowed_in_lab_mode(tmp_path, server):
    env = Env(tmp_path, server, allow_unsigned=True)
    rel = env.release("1.0.0", key=None)
    assert env.install(rel).version == "1.0.0"
    forged = sign_manifest(rel.envelope["manifest"], Ed25519PrivateKey.generate())
    with pytest.raises(ModelUpdateError) as e:  # a signature, if present, must verify
        env.installer.install(build_update_command(envelope=forged, base_url=server.url("/r/")))
    assert e.value.reason == "untrusted_key"
