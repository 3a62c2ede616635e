"""Chaos: damaged files in the state dir are logged, naming the file, and never stop a start.

What a power cut, a failing SD card or a hand edit can leave in ``{state_dir}``, read by
the code that reads it at every start, with real files.
"""

from __future__ import annotations

import logging
import os

import pytest

from edge_agent.daemon.controls import DetectSwitch
from edge_agent.publishing.topics import Topics
from edge_agent.updates.journal import RequestJournal

pytestmark = [pytest.mark.faults]


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
