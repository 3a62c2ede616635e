"""The update runner's command intake: idempotent request ids, a bounded queue, busy ids."""

from __future__ import annotations

import collections
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.updates.agent import UpdateRunner, current_state
from edge_agent.updates.commands import build_update_command
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.requests import LEDGER_FILE, RequestLedger, request_key
from edge_agent.updates.signing import TrustedKeys
from edge_agent.updates.store import ModelStore
from edge_agent.updates.transport import DownloadSettings
from tests.support.model_states import TERMINAL, States
from tests.support.updates_http import FileServer, Route
from tests.support.updates_release import install_local, make_release

KEY = Ed25519PrivateKey.generate()
TOPIC = "edge/cam/cmd/model/update"


class Device:
    def __init__(self, root, server, states=None):
        self.states = states or States()
        settings = UpdateSettings(download=DownloadSettings(allow_http=True, retries=0))
        self.store = ModelStore(root / "state")
        self.installer = UpdateInstaller(
            self.store, TrustedKeys([KEY.public_key()]), settings, progress=self.states
        )
        self.server = server

    def serve(self, release, throttle=0.0):
        base = f"/{release.version}/"
        for name, data in release.files.items():
            self.server.add(base + name, Route(body=data, throttle=throttle))
        return self.server.url(base)

    def model_hits(self, release):
        return self.server.routes[f"/{release.version}/model.tflite"].hits


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


def test_the_same_command_fifty_times_installs_once_and_ends_active(tmp_path, server):
    dev = Device(tmp_path, server)
    rel = make_release(tmp_path / "rel", KEY, "1.0.0")
    payload = build_update_command(
        envelope=rel.envelope, base_url=dev.serve(rel, throttle=0.05), request_id="req-1"
    )
    runner = UpdateRunner(dev.installer, queue_depth=4).start()
    try:
        for _ in range(50):
            runner.handle("", payload, TOPIC)
        dev.states.wait_finals(["req-1"])
        for _ in range(3):  # answered now: each repeat gets the answer again
            runner.handle("", payload, TOPIC)
        sentinel = b'{"request_id": "sentinel"}'  # a broken update: answered after the rest
        runner.handle("", sentinel, TOPIC)
        dev.states.wait_finals(["sentinel"])
    finally:
        runner.stop()
    finals = dev.states.finals("req-1")
    assert [(s["state"], s["reason"]) for s in finals] == [("active", None)] * 4, finals
    assert dev.model_hits(rel) == 1
    downloads = [s for s in dev.states.items if s["state"] == "downloading" and s["percent"] == 0]
    assert len(downloads) == 1
    assert not [s for s in dev.states.items if s["reason"] == "busy"]


def test_a_full_queue_refuses_with_the_request_id_and_every_command_ends_once(tmp_path, server):
    dev = Device(tmp_path, server)
    rel = make_release(tmp_path / "rel", KEY, "1.0.0")
    base = dev.serve(rel, throttle=0.05)
    rids = [f"req-{i}" for i in range(12)]
    runner = UpdateRunner(dev.installer, queue_depth=3).start()
    try:
        for rid in rids:
            payload = build_update_command(envelope=rel.envelope, base_url=base, request_id=rid)
            runner.handle("", payload, TOPIC)
            if rid == "req-0":  # running (not queued) before the others arrive
                with dev.states.cond:
                    dev.states.cond.wait_for(lambda: len(dev.states.items) > 0, 10)
        dev.states.wait_finals(rids)
    finally:
        runner.stop()
    finals = {rid: dev.states.finals(rid) for rid in rids}
    assert all(len(f) == 1 for f in finals.values()), finals
    outcome = collections.Counter((f[0]["state"], f[0]["reason"]) for f in finals.values())
    # One installs; three wait in the queue and find it active; the rest are refused.
    assert outcome == {("active", None): 1, ("active", "already_active"): 3, ("failed", "busy"): 8}
    assert dev.model_hits(rel) == 1
    assert not [s for s in dev.states.items if s["request_id"] is None]


def test_answers_survive_a_restart_and_a_reused_id_with_another_command_runs(tmp_path, server):
    dev = Device(tmp_path, server)
    v1, v2 = (make_release(tmp_path / "rel", KEY, v) for v in ("1.0.0", "2.0.0"))
    first = build_update_command(envelope=v1.envelope, base_url=dev.serve(v1), request_id="r")
    runner = UpdateRunner(dev.installer).start()
    try:
        runner.handle("", first, TOPIC)
        dev.states.wait_finals(["r"])
    finally:
        runner.stop()
    saved = json.loads((dev.store.root / LEDGER_FILE).read_text())
    assert [(e["request_id"], e["answer"]["state"]) for e in saved] == [("r", "active")]
    # A new process on the same state dir: the redelivered command is answered, not run.
    again = Device(tmp_path, server)
    runner = UpdateRunner(again.installer).start()
    try:
        runner.handle("", first, TOPIC)
        again.states.wait_finals(["r"])
        assert again.states.finals("r")[0] == dev.states.finals("r")[0]
        assert again.model_hits(v1) == 1 and again.states.items[0]["state"] == "active"
        second = build_update_command(envelope=v2.envelope, base_url=dev.serve(v2), request_id="r")
        runner.handle("", second, TOPIC)
        with again.states.cond:
            assert again.states.cond.wait_for(lambda: len(again.states.finals("r")) == 2, 20)
    finally:
        runner.stop()
    assert again.states.finals("r")[1]["version"] == "2.0.0"
    assert again.store.active().version == "2.0.0"


def test_the_ledger_is_bounded_and_forgets_transient_answers(tmp_path):
    path = tmp_path / LEDGER_FILE
    ledger = RequestLedger(path, limit=3)
    keys = [request_key("update", f"r{i}", b"{}") for i in range(5)]
    for key in keys:
        ledger.admit(key)
        ledger.answer(key, {"state": "failed", "reason": "bad_command", "request_id": key[0]})
    busy = request_key("update", "busy-one", b"{}")
    ledger.admit(busy)
    ledger.answer(busy, {"state": "failed", "reason": "busy", "request_id": "busy-one"})
    assert [e["request_id"] for e in json.loads(path.read_text())] == ["r2", "r3", "r4"]
    reloaded = RequestLedger(path, limit=3)
    assert reloaded.admit(keys[4])[0].value == "answered"
    assert reloaded.admit(keys[0])[0].value == "new"  # forgotten: runs again
    assert reloaded.admit(busy)[0].value == "new"
    path.write_text("{not json")
    assert RequestLedger(path).admit(keys[4])[0].value == "new"  # damaged file: logged


def test_a_store_fallback_is_reported_on_the_model_state(tmp_path, server):
    dev = Device(tmp_path, server)
    for version in ("1.0.0", "2.0.0"):
        install_local(dev.installer, make_release(tmp_path / "rel", KEY, version).dir)
    (dev.store.root / "cls/2.0.0/model.tflite").unlink()
    restarted = Device(tmp_path, server)
    assert restarted.store.recover().version == "1.0.0"
    state = current_state(restarted.installer)
    assert (state["state"], state["version"], state["reason"]) == ("active", "1.0.0", "fallback")
    assert state["from_version"] == "cls@2.0.0"
    assert "model.tflite" in state["message"] and "fell back to cls@1.0.0" in state["message"]
    # An undisturbed restart reports nothing of the kind.
    again = Device(tmp_path, server)
    again.store.recover()
    assert current_state(again.installer)["reason"] is None


class ResendOnAnswer(States):
    """The operator's client: resends the command the moment it sees the answer."""

    def __init__(self, payload):
        super().__init__()
        self.payload, self.runner = payload, None

    def __call__(self, state):
        super().__call__(state)
        if state["state"] in TERMINAL and len(self.finals("r")) == 1:
            self.runner.handle("", self.payload, TOPIC)  # before the runner has returned


def test_a_repeat_sent_the_moment_the_answer_is_seen_gets_the_answer(tmp_path, server):
    # The answer must already be on record when it is published, or the repeat is
    # dropped as "in progress" and never answered.
    rel = make_release(tmp_path / "rel", KEY, "1.0.0")
    states = ResendOnAnswer(None)
    dev = Device(tmp_path, server, states)
    states.payload = build_update_command(
        envelope=rel.envelope, base_url=dev.serve(rel), request_id="r"
    )
    states.runner = runner = UpdateRunner(dev.installer).start()
    try:
        runner.handle("", states.payload, TOPIC)
        with states.cond:
            assert states.cond.wait_for(lambda: len(states.finals("r")) == 2, 20), states.items
    finally:
        runner.stop()
    assert states.finals("r")[0] == states.finals("r")[1]
    assert dev.model_hits(rel) == 1
