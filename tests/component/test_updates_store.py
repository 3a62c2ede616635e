"""The model store on a real filesystem: recovery, fallback, rollback, pruning."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.signing import TrustedKeys
from edge_agent.updates.store import ModelStore
from tests.support.updates_release import fake_tflite, install_local, make_release

KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def store(tmp_path):
    """A store with cls@1.0.0 then cls@2.0.0 installed (2.0.0 active, 1.0.0 previous)."""
    store = ModelStore(tmp_path / "state", keep_versions=2)
    installer = UpdateInstaller(store, TrustedKeys([KEY.public_key()]))
    for version in ("1.0.0", "2.0.0"):
        install_local(installer, make_release(tmp_path / "rel", KEY, version).dir)
    return store


def pointer_file(store):
    return store.root / "active"


def test_recover_keeps_a_valid_active_release_and_sweeps_leftovers(store):
    (store.root / ".staging/cls-3.0.0-abc").mkdir(parents=True)
    (store.root / ".staging/cls-3.0.0-abc/model.tflite.part").write_bytes(b"half")
    (store.root / ".trash/x").mkdir(parents=True)
    (store.root / "active.tmp4242").write_text("{")
    ptr = store.pointer()
    release = store.recover()
    assert release.label == "cls@2.0.0"
    assert store.pointer() == ptr
    assert not (store.root / ".staging").exists()
    assert not (store.root / ".trash").exists()
    assert not (store.root / "active.tmp4242").exists()


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[]",
        '{"name": 5}',
        '{"name": "cls", "version": "9.9.9"}',
        '{"name": "../../etc", "version": "1.0.0"}',
        '{"name": "cls", "version": "../1.0.0"}',
    ],
)
def test_broken_pointer_falls_back_to_newest_complete_release(store, content):
    pointer_file(store).write_text(content)
    release = store.recover()
    assert release.label == "cls@2.0.0"
    ptr = store.pointer()
    assert (ptr["version"], ptr["previous"]["version"]) == ("2.0.0", "1.0.0")


def test_missing_pointer_falls_back(store):
    pointer_file(store).unlink()
    assert store.recover().version == "2.0.0"


def test_corrupted_active_file_falls_back_to_previous(store):
    model = store.root / "cls/2.0.0/model.tflite"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF  # same size, different content: only a hash finds it
    model.write_bytes(bytes(data))
    assert store.active(verify=False).version == "2.0.0"
    with pytest.raises(ModelUpdateError) as e:
        store.active(verify=True)
    assert e.value.reason == "sha256_mismatch"
    assert store.recover().version == "1.0.0"
    assert not (store.root / "cls/2.0.0").exists()
    assert store.active(verify=True).version == "1.0.0"


def test_incomplete_active_dir_falls_back(store):
    (store.root / "cls/2.0.0/labels.txt").unlink()
    assert store.recover().version == "1.0.0"


def test_nothing_valid_means_configured_model(store):
    for version in ("1.0.0", "2.0.0"):
        (store.root / f"cls/{version}/manifest.json").write_text("garbage")
    assert store.recover() is None
    assert store.pointer() is None
    assert store.active() is None


def test_missing_previous_is_cleared(store):
    import shutil

    shutil.rmtree(store.root / "cls/1.0.0")
    assert store.recover().version == "2.0.0"
    assert store.pointer()["previous"] is None
    with pytest.raises(ModelUpdateError) as e:
        store.rollback()
    assert e.value.reason == "no_previous"


def test_rollback_switches_pointer_and_deletes_rolled_back_release(store):
    now, old = store.rollback()
    assert (now.version, old.version) == ("1.0.0", "2.0.0")
    assert json.loads(pointer_file(store).read_text())["version"] == "1.0.0"
    assert not (store.root / "cls/2.0.0").exists()


def test_rollback_of_first_release_can_return_to_configured_model(tmp_path):
    store = ModelStore(tmp_path / "s")
    install_local(
        UpdateInstaller(store, TrustedKeys([KEY.public_key()])),
        make_release(tmp_path / "rel", KEY, 1).dir,
    )
    with pytest.raises(ModelUpdateError):
        store.rollback()
    now, old = store.rollback(allow_none=True)
    assert now is None and old.version == "1"
    assert store.active() is None


def test_same_version_with_other_contents_never_replaces_the_active_one(store, tmp_path):
    installer = UpdateInstaller(
        store, TrustedKeys([KEY.public_key()]), UpdateSettings(allow_force=True)
    )
    other = make_release(
        tmp_path / "other",
        KEY,
        "2.0.0",
        files={"model.tflite": ("model", fake_tflite(seed=77)), "labels.txt": ("labels", b"x\n")},
    )
    with pytest.raises(ModelUpdateError) as e:
        install_local(installer, other.dir, force=True)
    assert e.value.reason == "version_conflict"
    assert (store.root / "cls/2.0.0/labels.txt").read_bytes() == b"background\ncat\ndog\n"
    assert not (store.root / ".staging").exists() or not any((store.root / ".staging").iterdir())


def test_installed_lists_complete_releases_newest_first(store):
    assert [r.version for r in store.installed()] == ["2.0.0", "1.0.0"]
    (store.root / "cls/9.0.0").mkdir()  # an empty dir is not a release
    assert [r.version for r in store.installed()] == ["2.0.0", "1.0.0"]
