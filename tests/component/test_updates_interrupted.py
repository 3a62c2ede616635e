"""Requests cut short by a stop or a crash: each still ends once, and can be sent again.

The real store, installer, runner and journal on a tmp dir; a "crash" is simulated by
reading the state directory the way the next start does, while the first run is still
stuck where the crash would have hit it.
"""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.agent import UpdateRunner
from edge_agent.updates.commands import build_update_command
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.journal import RequestJournal, final_state
from edge_agent.updates.requests import Seen, request_key
from edge_agent.updates.signing import TrustedKeys
from edge_agent.updates.store import ModelStore
from edge_agent.updates.transport import DownloadSettings
from tests.component.test_updates_runner import TERMINAL, States
from tests.support.updates_http import FileServer, Route
from tests.support.updates_release import install_local, make_release

KEY = Ed25519PrivateKey.generate()
UPDATE, ROLLBACK = "edge/cam/cmd/model/update", "edge/cam/cmd/model/rollback"


class Crash(BaseException):
    """Stands for a SIGKILL: nothing after it runs, the disk stays as it is."""


class Device:
    """One run of the daemon's update side: store, installer with a swap, journal."""

    def __init__(self, state_dir, swap=None):
        self.states = States()
        self.journal = RequestJournal(state_dir)
        self.store = ModelStore(state_dir)
        self.store.recover()
        settings = UpdateSettings(download=DownloadSettings(allow_http=True, retries=0))

        def progress(state):  # what the daemon's progress callback does with each state
            self.journal.observe(state)
            self.states(state)

        self.installer = UpdateInstaller(
            self.store, TrustedKeys([KEY.public_key()]), settings, progress=progress, swap=swap
        )

    def runner(self):
        return UpdateRunner(self.installer, journal=self.journal, queue_depth=4)


def history(state_dir):
    return json.loads((state_dir / "models" / "versions.json").read_text())


@pytest.mark.parametrize("how", ["crash", "stop"])
def test_an_update_cut_short_in_its_health_check_can_be_sent_again(tmp_path, how):
    state = tmp_path / "state"
    v1 = make_release(tmp_path / "rel", KEY, "1.0.0")
    v2 = make_release(tmp_path / "rel", KEY, "2.0.0")
    install_local(Device(state).installer, v1.dir)
    assert history(state) == {"cls": "1.0.0"}

    def cut_short(release):
        if how == "crash":
            raise Crash()  # SIGKILL in the health check: the store stays on trial
        raise ModelUpdateError("health_check_failed", "the daemon stopped before it finished")

    with pytest.raises((Crash, ModelUpdateError)):
        install_local(Device(state, swap=cut_short).installer, v2.dir)
    # The trial never passed: 2.0.0 does not count as installed.
    assert history(state) == {"cls": "1.0.0"}
    again = Device(state, swap=lambda release: None)  # the next start (recovery runs)
    assert again.store.active().version == "1.0.0"
    assert install_local(again.installer, v2.dir).version == "2.0.0"
    assert history(state) == {"cls": "2.0.0"}
    # Once confirmed it counts: replaying the older release is refused.
    with pytest.raises(ModelUpdateError) as e:
        install_local(again.installer, v1.dir)
    assert e.value.reason == "not_newer"


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


def serve(server, release, throttle=0.0):
    base = f"/{release.version}/"
    for name, data in release.files.items():
        server.add(base + name, Route(body=data, throttle=throttle))
    return server.url(base)


def queue_behind_a_slow_update(tmp_path, server, dev, runner):
    """r1 downloading slowly, an update and a rollback queued behind it; their payloads."""
    v1 = make_release(tmp_path / "rel", KEY, "1.0.0")
    v2 = make_release(tmp_path / "rel", KEY, "2.0.0")
    slow = build_update_command(
        envelope=v1.envelope, base_url=serve(server, v1, throttle=5.0), request_id="r1"
    )
    queued = build_update_command(envelope=v2.envelope, base_url=serve(server, v2), request_id="q")
    rollback = b'{"request_id": "rb"}'
    runner.handle("", slow, UPDATE)
    with dev.states.cond:
        dev.states.cond.wait_for(lambda: dev.states.items, 10)
    runner.handle("", queued, UPDATE)
    runner.handle("", rollback, ROLLBACK)
    return {"q": ("update", queued), "rb": ("rollback", rollback)}


def test_commands_queued_at_a_stop_each_get_one_answer_and_can_run_later(tmp_path, server):
    dev = Device(tmp_path / "state")
    runner = dev.runner().start()
    try:
        queued = queue_behind_a_slow_update(tmp_path, server, dev, runner)
    finally:
        runner.stop()
    for rid in ("q", "rb"):
        finals = dev.states.finals(rid)
        assert [(s["state"], s["reason"]) for s in finals] == [("failed", "interrupted")], finals
        assert "before this request ran" in finals[0]["message"]
        kind, payload = queued[rid]  # not an answer to repeat: sent again, it runs
        assert runner.ledger.admit(request_key(kind, rid, payload))[0] is Seen.NEW
    assert len(dev.states.finals("r1")) == 1
    # Everything was answered at the stop: the next start has nothing to answer again.
    assert not dev.journal.path.exists()


def test_commands_queued_at_a_crash_are_answered_at_the_next_start(tmp_path, server):
    dev = Device(tmp_path / "state")
    runner = dev.runner().start()
    try:
        queue_behind_a_slow_update(tmp_path, server, dev, runner)
        # SIGKILL now: the next start sees the state directory as it is.
        shutil.copytree(tmp_path / "state", tmp_path / "after")
    finally:
        runner.stop()
    after = Device(tmp_path / "after")
    pending = after.journal.take()
    assert (pending.request_id, pending.state) == ("r1", "downloading")
    after.journal.clear()  # the daemon publishes final_state(pending) for it
    second = after.runner().start()
    second.stop()
    answered = {s["request_id"]: (s["state"], s["reason"]) for s in after.states.items}
    assert answered == {"q": ("failed", "interrupted"), "rb": ("failed", "interrupted")}
    assert len([s for s in after.states.items if s["state"] in TERMINAL]) == 2
    assert not after.journal.path.exists()


def test_a_rollback_cut_short_is_answered_and_can_be_sent_again(tmp_path):
    state = tmp_path / "state"
    entered, armed = threading.Event(), threading.Event()

    def swap(release):
        if armed.is_set():  # the rollback's health check
            entered.set()
            dev.installer.cancel.wait(30)
            raise ModelUpdateError("health_check_failed", "the daemon stopped before it finished")

    dev = Device(state, swap=swap)
    for version in ("1.0.0", "2.0.0"):
        install_local(dev.installer, make_release(tmp_path / "rel", KEY, version).dir)
    armed.set()
    runner = dev.runner().start()
    payload = b'{"request_id": "rb-1"}'
    try:
        runner.handle("", payload, ROLLBACK)
        assert entered.wait(10)
        # SIGKILL now: the next start finds the rollback and answers it.
        pending = RequestJournal(state).take()
        assert pending[:5] == ("rb-1", "cls", "1.0.0", "installing", "rollback")
        doc = final_state(pending, ("cls", "2.0.0"))  # recovery: still on 2.0.0
        assert (doc["state"], doc["reason"], doc["request_id"]) == ("failed", "interrupted", "rb-1")
    finally:
        runner.stop()
    assert len(dev.states.finals("rb-1")) == 1
    # Answered because of the stop: a repeat of that command must run, not get that answer.
    assert runner.ledger.admit(request_key("rollback", "rb-1", payload))[0] is Seen.NEW
    assert dev.store.active().version == "2.0.0"
    assert not dev.journal.path.exists()


@pytest.mark.parametrize("record", ["[]", '"1.0.0"', "null", "3"])
def test_a_version_record_that_is_json_but_no_object_does_not_stop_updates(tmp_path, record):
    # versions.json edited by hand or damaged into other JSON: the replay check falls
    # back on the releases on disk, as for an unreadable file, and the update installs.
    state = tmp_path / "state"
    v1 = make_release(tmp_path / "rel", KEY, "1.0.0")
    v2 = make_release(tmp_path / "rel", KEY, "2.0.0")
    install_local(Device(state).installer, v1.dir)
    (state / "models" / "versions.json").write_text(record)
    installed = install_local(Device(state).installer, v2.dir)
    assert installed.version == v2.version == "2.0.0"
    assert history(state) == {"cls": "2.0.0"}
