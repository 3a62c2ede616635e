"""Chaos: damaged files in the state dir are logged, naming the file, and never stop a start.

What a power cut, a failing SD card or a hand edit can leave in ``{state_dir}``, read by
the code that reads it at every start, with real files.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config.loader import parse_config
from edge_agent.daemon.controls import DetectSwitch
from edge_agent.daemon.model_updates import UpdateService
from edge_agent.daemon.options import model_options
from edge_agent.errors import ModelUpdateError
from edge_agent.publishing.topics import Topics
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.journal import RequestJournal
from edge_agent.updates.requests import RequestLedger, Seen, request_key
from edge_agent.updates.signing import TrustedKeys
from edge_agent.updates.store import ModelStore
from tests.support.daemon import to_toml
from tests.support.model_states import States
from tests.support.paths import REPO
from tests.support.updates_release import install_local, make_release

pytestmark = [pytest.mark.faults]

KEY = Ed25519PrivateKey.generate()
DEMO = REPO / "models" / "demo"


@pytest.mark.parametrize(
    "content", ['{"off": null}', '{"off": 5}', '{"off": "cam0"}', '{"off": {"c": 1}}']
)
def test_a_damaged_detect_switch_file_is_logged_and_every_camera_detects(tmp_path, caplog, content):
    # detect.json holds {"off": [camera, ...]}; anything else is not a list of cameras
    # switched off: before, null and 5 raised TypeError out of the daemon's start (exit 1,
    # a traceback, systemd restarting it into the same crash), and "cam0" switched off
    # camera "c" (a letter of it) without a word.
    path = tmp_path / "detect.json"
    path.write_text(content)
    caplog.set_level(logging.WARNING, logger="edge_agent.daemon.controls")
    published: list[tuple[str, bytes]] = []
    switch = DetectSwitch(
        ["cam0", "c"], str(tmp_path), Topics("p", "dev"), lambda t, p: published.append((t, p))
    )
    assert switch.detecting("cam0") and switch.detecting("c")
    assert str(path) in caplog.text, caplog.text
    switch.publish_all()
    assert sorted(published) == [
        (switch.topic_state("c"), b"ON"),
        (switch.topic_state("cam0"), b"ON"),
    ]


def test_an_answered_request_leaves_the_journal_for_good(tmp_path, monkeypatch):
    # The final state of a request removes update-request.json before it is published.
    # An unlink is not durable until its directory is synced: a power cut within the
    # file system's commit interval after the answer went out brought the record back,
    # and the next start answered the request a second time, failed/interrupted, over
    # its real answer (say sha256_mismatch) on the retained model topic.
    journal = RequestJournal(tmp_path)
    journal.begin("r1", "update")
    journal.observe({"state": "downloading", "request_id": "r1", "name": "cls", "version": "2"})
    assert journal.path.exists()
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    journal.observe({"state": "failed", "request_id": "r1", "reason": "sha256_mismatch"})
    assert not journal.path.exists()
    assert str(tmp_path) in synced, f"the removal of {journal.path} was not synced: {synced}"
    assert RequestJournal(tmp_path).take() is None


class PowerCut(BaseException):
    """Stands for a SIGKILL at a store checkpoint: nothing after it runs, the disk stays."""


def test_a_release_confirmed_just_before_a_power_cut_still_counts_against_replays(tmp_path):
    # versions.json (the highest version of each name confirmed here) is written after
    # the pointer's trial mark is cleared. Cut between the two, the box came back on
    # cls@3.0.0, confirmed, with versions.json still saying cls@1.0.0: once the box had
    # moved to another model, an old signed cls@2.0.0 was installed over it (a replay
    # the record exists to refuse).
    state, rel = tmp_path / "state", tmp_path / "rel"
    keys = TrustedKeys([KEY.public_key()])

    def start(hook=None) -> UpdateInstaller:
        store = ModelStore(state, hook=hook)
        store.recover()  # what the daemon's start does
        settings = UpdateSettings(allow_model_change=True)
        return UpdateInstaller(store, keys, settings, swap=lambda release: None)

    install_local(start(), make_release(rel, KEY, "1.0.0").dir)
    renamed: list[str] = []

    def cut_at_confirm(point: str) -> None:
        if point == "pointer_renamed":
            renamed.append(point)
            if len(renamed) == 2:  # the switch on trial, then the confirm: trial passed
                raise PowerCut

    with pytest.raises(PowerCut):
        install_local(start(cut_at_confirm), make_release(rel, KEY, "3.0.0").dir)
    box = start()
    assert box.store.pointer().get("trial") is None
    assert box.store.active().version == "3.0.0"
    install_local(box, make_release(rel, KEY, "1.0.0", name="doorcam").dir)
    with pytest.raises(ModelUpdateError) as refused:
        install_local(start(), make_release(rel, KEY, "2.0.0").dir)
    assert refused.value.reason == "not_newer"
    assert json.loads((state / "models" / "versions.json").read_text())["cls"] == "3.0.0"


def test_a_damaged_version_record_falls_back_on_the_releases_on_disk(tmp_path, caplog):
    # An unreadable versions.json was logged "using the releases on disk", but nothing
    # used them: replay protection across names was off, and an old signed cls@2.0.0
    # went in over a box that had served cls@3.0.0 (still kept in its store).
    state, rel = tmp_path / "state", tmp_path / "rel"
    keys = TrustedKeys([KEY.public_key()])

    def start() -> UpdateInstaller:
        store = ModelStore(state)
        store.recover()
        settings = UpdateSettings(allow_model_change=True)
        return UpdateInstaller(store, keys, settings, swap=lambda release: None)

    install_local(start(), make_release(rel, KEY, "3.0.0").dir)
    install_local(start(), make_release(rel, KEY, "1.0.0", name="doorcam").dir)
    record = state / "models" / "versions.json"
    record.write_bytes(b"")  # a failing card, a hand edit
    caplog.set_level(logging.WARNING, logger="edge_agent.updates")
    with pytest.raises(ModelUpdateError) as refused:
        install_local(start(), make_release(rel, KEY, "2.0.0").dir)
    assert refused.value.reason == "not_newer"
    assert "versions.json unreadable" in caplog.text
    assert json.loads(record.read_text()) == {"cls": "3.0.0", "doorcam": "1.0.0"}  # repaired


def _update_service(state: Path, states: States) -> UpdateService:
    """The daemon's update side on ``state``, as ``edge-agent run`` makes it at start."""
    doc = {
        "device": {"id": "cam", "state_dir": str(state)},
        "camera": [{"name": "cam0", "source": str(DEMO / "clip.avi")}],
        "model": {"path": str(DEMO / "color_blobs.tflite"), "labels": str(DEMO / "labels.txt")},
        "mqtt": {"prefix": "edge"},
        "updates": {"enabled": True},
    }
    config = parse_config(to_toml(doc), env={})
    return UpdateService(config, model_options(config), None, states)


def test_a_command_kept_during_startup_is_answered_after_a_power_cut(tmp_path):
    # Commands that arrive while the daemon starts (a box back from a power cut gets the
    # commands its broker kept for it the moment it connects, before its model is
    # loaded) were kept in memory only: cut again then, they were never answered.
    state, topic = tmp_path / "state", "edge/cam/cmd/model/rollback"
    first = _update_service(state, States())
    first.handle("model/rollback", b'{"request_id": "early-1"}', topic)  # kept: not started
    # The power cut: the first run never gets further. The next start answers it.
    states = States()
    second = _update_service(state, states)
    second.handle("model/rollback", b'{"request_id": "early-2"}', topic)  # kept again
    second.start(SimpleNamespace(current=None))
    try:
        answer = states.final("early-1", timeout=10)
        assert (answer["state"], answer["reason"]) == ("failed", "interrupted")
        # A command kept during this start runs once the runner has started.
        assert states.final("early-2", timeout=10)["reason"] == "no_previous"
    finally:
        second.stop(5.0)
    # Each was answered once: not again at the start after.
    third = States()
    restarted = _update_service(state, third)
    restarted.start(SimpleNamespace(current=None))
    restarted.stop(5.0)
    assert third.finals("early-1") == [] and third.finals("early-2") == [], third.items
    assert len(states.finals("early-1")) == 1 and len(states.finals("early-2")) == 1


@pytest.mark.parametrize("content", ["{}", '"answers"', "null", "7"])
def test_a_ledger_of_answers_that_is_no_list_is_logged(tmp_path, caplog, content):
    # models/requests.json keeps the answers that make a redelivered command answered,
    # not run again. Damaged into JSON of another type it was ignored without a word
    # (an unreadable one is logged): the next redelivery ran the command a second time.
    path = tmp_path / "requests.json"
    path.write_text(content)
    caplog.set_level(logging.WARNING, logger="edge_agent.updates.requests")
    ledger = RequestLedger(path)
    assert ledger.admit(request_key("update", "r1", b"{}"))[0] is Seen.NEW
    assert str(path) in caplog.text, caplog.text
