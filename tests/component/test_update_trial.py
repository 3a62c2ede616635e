"""The daemon's update service with a stand-in pipeline: the health check of a release on
trial waits for real frames, commands around that wait, a stop mid-update, and commands
that arrive before the service started.

The service is the real one (store, installer, runner, ledger, journal, HTTP download of
signed releases); only the supervisor is a stand-in whose frame counters the test drives
("the cameras are down": no frames; "they came back": frames, maybe failing).
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.config.loader import parse_config
from edge_agent.daemon.model_updates import UpdateService
from edge_agent.daemon.options import model_options
from edge_agent.updates.commands import build_update_command
from edge_agent.updates.journal import FILE_NAME
from edge_agent.updates.signing import envelope_bytes
from tests.support.daemon import to_toml
from tests.support.model_states import States
from tests.support.updates_e2e import DEMO
from tests.support.updates_http import FileServer, Route
from tests.support.updates_release import make_release

KEY = Ed25519PrivateKey.generate()
BASE = "edge/cam"


class Ticket:
    """A switch the stand-in pipeline adopts at once."""

    adopted = True

    def wait(self, timeout: float) -> bool:
        return True


class FakeSupervisor:
    """Counters the health check reads; a feeder thread plays the cameras."""

    def __init__(self):
        self.completed = self.errors = 0
        self.last_error = ""
        self.current = SimpleNamespace(meta={"name": "color_blobs", "version": ""})
        self.frames = threading.Event()  # cameras up
        self.failing = False  # every frame fails (a broken model)
        self.block_prepare = threading.Event()  # set: prepare() waits for `release`
        self.release = threading.Event()
        self.switches = SimpleNamespace(
            switch_to=self._switch, commit=lambda: None, rollback=lambda: Ticket(),
            cancel=lambda ticket: True,
        )  # fmt: skip
        self._stop = threading.Event()
        threading.Thread(target=self._feed, daemon=True).start()

    def prepare(self, options, meta, cancel=None):
        if self.block_prepare.is_set():
            self.release.wait(20)
        return SimpleNamespace(worker=SimpleNamespace(stop=lambda t: None), meta=meta)

    def _switch(self, model):
        self.current = model
        return Ticket()

    def _feed(self):
        while not self._stop.wait(0.005):
            if self.frames.is_set():
                if self.failing:
                    self.errors += 1
                    self.last_error = "invoke failed"
                else:
                    self.completed += 1

    def close(self):
        self._stop.set()


@pytest.fixture
def lab(tmp_path, monkeypatch, request):
    monkeypatch.setattr(UpdateService, "health_grace", 0.2, raising=False)
    pub = tmp_path / "release.pub"
    pub.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    doc = {
        "device": {"id": "cam", "state_dir": str(tmp_path / "state")},
        "camera": [{"name": "cam0", "source": str(DEMO / "clip.avi")}],
        "model": {"path": str(DEMO / "color_blobs.tflite"), "labels": str(DEMO / "labels.txt")},
        "mqtt": {"prefix": "edge"},
        "updates": {
            "enabled": True,
            "trusted_keys": [str(pub)],
            "allow_http": True,
            "allowed_hosts": ["127.0.0.1"],
            "allow_model_change": True,
            "health_frames": 3,
            "retries": 0,
            "keep_versions": 3,
            "queue_depth": 2,
            **getattr(request, "param", {}),  # indirect parametrization: [updates] overrides
        },
    }
    config = parse_config(to_toml(doc), env={})
    states, sup = States(), FakeSupervisor()
    service = UpdateService(config, model_options(config), None, states)
    with FileServer() as server:
        yield SimpleNamespace(
            tmp=tmp_path, config=config, states=states, sup=sup, service=service, server=server
        )
        service.stop(5.0)
        sup.close()


def update(lab, version, rid, by_url=False):
    """Send model/update for a fake release ``version`` (served over loopback HTTP), with
    the envelope in the command or, ``by_url``, as a ``manifest_url``."""
    release = make_release(lab.tmp / "releases", KEY, version)
    base = f"/{version}/"
    for name, data in release.files.items():
        lab.server.add(base + name, Route(body=data))
    if by_url:
        lab.server.add(base + "manifest.json", Route(body=envelope_bytes(release.envelope)))
        payload = build_update_command(
            manifest_url=lab.server.url(base + "manifest.json"), request_id=rid
        )
    else:
        payload = build_update_command(
            envelope=release.envelope, base_url=lab.server.url(base), request_id=rid
        )
    lab.service.handle("model/update", payload, f"{BASE}/cmd/model/update")


def rollback(lab, rid):
    payload = json.dumps({"request_id": rid}).encode()
    lab.service.handle("model/rollback", payload, f"{BASE}/cmd/model/rollback")


def pointer(lab):
    return json.loads((lab.tmp / "state" / "models" / "active").read_text())


def installed(lab, *versions):
    """Install releases with the cameras up (each passes its health check)."""
    lab.sup.frames.set()
    for version in versions:
        update(lab, version, f"v{version}")
        assert lab.states.final(f"v{version}")["state"] == "active"


def test_with_the_cameras_down_the_trial_stays_open_until_frames_judge_it(lab):
    lab.service.start(lab.sup)
    installed(lab, "1.0.0")
    lab.sup.frames.clear()  # the cameras go down
    update(lab, "2.0.0", "bad")
    lab.states.waiting("bad")
    # No verdict without frames: the release serves on trial, 1.0.0 stays the target.
    ptr = pointer(lab)
    assert (ptr["version"], ptr.get("trial"), ptr["previous"]["version"]) == (
        "2.0.0",
        True,
        "1.0.0",
    )
    assert lab.states.finals("bad") == []
    lab.sup.failing = True
    lab.sup.frames.set()  # the cameras come back: every frame fails on the new model
    final = lab.states.final("bad")
    assert (final["state"], final["reason"]) == ("rolled_back", "health_check_failed"), final
    assert pointer(lab)["version"] == "1.0.0"


def test_good_frames_after_the_wait_confirm_the_trial(lab):
    lab.service.start(lab.sup)
    installed(lab, "1.0.0")
    lab.sup.frames.clear()
    update(lab, "2.0.0", "good")
    lab.states.waiting("good")
    lab.sup.frames.set()
    final = lab.states.final("good")
    assert (final["state"], final["version"]) == ("active", "2.0.0"), final
    assert "trial" not in pointer(lab)


def test_a_rollback_while_the_trial_waits_goes_back_one_release_and_answers_both(lab):
    lab.service.start(lab.sup)
    installed(lab, "1.0.0", "1.1.0")
    lab.sup.frames.clear()
    update(lab, "2.0.0", "trial")
    lab.states.waiting("trial")
    rollback(lab, "rb")
    final = lab.states.final("trial")
    assert (final["state"], final["reason"]) == ("rolled_back", "superseded"), final
    answer = lab.states.final("rb")
    assert (answer["state"], answer["version"]) == ("rolled_back", "1.1.0"), answer
    assert answer["from_version"] == "cls@2.0.0"
    assert pointer(lab)["version"] == "1.1.0"  # not 1.0.0: one step back, not two
    rollback(lab, "rb")  # a repeat gets the same answer, and goes nowhere
    lab.states.wait(lambda items: len(lab.states.of("rb")) == 2)
    assert pointer(lab)["version"] == "1.1.0"


@pytest.mark.parametrize("by_url", [False, True], ids=["inline", "manifest-url"])
def test_a_newer_update_while_the_trial_waits_supersedes_it(lab, by_url):
    lab.service.start(lab.sup)
    installed(lab, "1.0.0")
    lab.sup.frames.clear()
    update(lab, "2.0.0", "old")
    lab.states.waiting("old")
    update(lab, "3.0.0", "new", by_url=by_url)
    final = lab.states.final("old")
    assert (final["state"], final["reason"]) == ("rolled_back", "superseded"), final
    lab.states.waiting("new")  # the newer one waits for frames in turn
    lab.sup.frames.set()
    assert lab.states.final("new")["state"] == "active"
    assert (pointer(lab)["version"], pointer(lab)["previous"]["version"]) == ("3.0.0", "1.0.0")


@pytest.mark.parametrize(
    "version,by_url,answer",
    [
        ("2.0.0", False, ("active", "already_active")),
        ("1.1.0", False, ("failed", "not_newer")),
        ("1.1.0", True, ("failed", "not_newer")),  # judged on its fetched manifest
        ("9.9.9", None, ("failed", "http_error")),  # its manifest_url answers 404
    ],
    ids=["the-release-on-trial-again", "not-newer", "not-newer-by-url", "unreachable-url"],
)
def test_only_a_command_that_would_change_the_model_ends_the_trial(lab, version, by_url, answer):
    lab.service.start(lab.sup)
    installed(lab, "1.0.0", "1.1.0")
    lab.sup.frames.clear()
    update(lab, "2.0.0", "trial")
    lab.states.waiting("trial")
    if by_url is None:
        missing = lab.server.url(f"/{version}/manifest.json")
        payload = build_update_command(manifest_url=missing, request_id="idle")
        lab.service.handle("model/update", payload, f"{BASE}/cmd/model/update")
    else:
        update(lab, version, "idle", by_url=by_url)  # would not change the model now
    lab.service.handle("model/update", b'{"request_id": "junk"}', f"{BASE}/cmd/model/update")
    # The malformed command is answered while the trial waits, once the update queued
    # before it was judged: neither ended the trial.
    junk = lab.states.final("junk")
    assert (junk["state"], junk["reason"]) == ("failed", "bad_command"), junk
    assert lab.states.finals("trial") == []
    assert (pointer(lab)["version"], pointer(lab).get("trial")) == ("2.0.0", True)
    lab.sup.frames.set()
    assert lab.states.final("trial")["state"] == "active"
    idle = lab.states.final("idle")  # answered after the verdict, as it would have been
    assert (idle["state"], idle["reason"]) == answer, idle
    assert pointer(lab)["version"] == "2.0.0"


def test_a_rollback_sent_before_the_trial_began_goes_back_one_release(lab):
    lab.service.start(lab.sup)
    installed(lab, "1.0.0", "1.1.0")
    lab.sup.frames.clear()
    lab.sup.block_prepare.set()  # the update is still verifying when the rollback comes
    update(lab, "2.0.0", "trial")
    lab.states.wait(lambda items: any(s["state"] == "verifying" for s in lab.states.of("trial")))
    rollback(lab, "rb")
    lab.sup.release.set()
    final = lab.states.final("trial")
    assert (final["state"], final["reason"]) == ("rolled_back", "superseded"), final
    answer = lab.states.final("rb")
    assert (answer["state"], answer["reason"], answer["version"]) == (
        "rolled_back",
        "requested",
        "1.1.0",
    ), answer
    assert pointer(lab)["version"] == "1.1.0"  # as with the cameras up: one step back
    assert len(lab.states.of("rb")) == 1  # answered once, never run again
    rollback(lab, "rb")  # a repeat gets the same answer, and goes nowhere
    lab.states.wait(lambda items: len(lab.states.of("rb")) == 2)
    assert pointer(lab)["version"] == "1.1.0"


@pytest.mark.parametrize(
    "lab", [{"download_timeout": 1.0, "attempt_timeout": 1.0, "update_timeout": 1.0}], indirect=True
)
def test_a_newer_update_by_url_supersedes_a_trial_that_outlasted_the_update_timeout(lab):
    """updates.update_timeout bounds one update's fetches, not the trial's wait for frames:
    a manifest_url sent once the trial has waited longer is fetched, and supersedes it."""
    lab.service.start(lab.sup)
    installed(lab, "1.0.0")
    lab.sup.frames.clear()
    sent = time.monotonic()
    update(lab, "2.0.0", "old")
    lab.states.waiting("old")
    while time.monotonic() < sent + 1.5:  # the condition under test: the budget is spent
        time.sleep(0.05)
    update(lab, "3.0.0", "new", by_url=True)
    final = lab.states.final("old")
    assert (final["state"], final["reason"]) == ("rolled_back", "superseded"), final
    lab.sup.frames.set()
    assert lab.states.final("new")["state"] == "active"
    assert pointer(lab)["version"] == "3.0.0"


def test_a_queued_update_whose_manifest_trickles_does_not_blind_the_trial(lab):
    """The trial judges a queued manifest_url update on its fetched manifest; a server that
    trickles it must not keep the health check from seeing a failing release meanwhile."""
    lab.service.start(lab.sup)
    installed(lab, "1.0.0")
    lab.sup.frames.clear()
    update(lab, "2.0.0", "trial")
    lab.states.waiting("trial")
    release = make_release(lab.tmp / "releases", KEY, "3.0.0")
    slow = Route(body=envelope_bytes(release.envelope), trickle=1.0)  # one byte a second
    lab.server.add("/3.0.0/manifest.json", slow)
    payload = build_update_command(
        manifest_url=lab.server.url("/3.0.0/manifest.json"), request_id="slow"
    )
    lab.service.handle("model/update", payload, f"{BASE}/cmd/model/update")
    while slow.hits == 0:  # the trial is judging it: its manifest is being fetched
        time.sleep(0.01)
    lab.sup.failing = True
    lab.sup.frames.set()  # the release on trial fails its frames
    final = lab.states.final("trial", timeout=10)
    assert (final["state"], final["reason"]) == ("rolled_back", "health_check_failed"), final
    assert pointer(lab)["version"] == "1.0.0"
    assert any(t.name == "model-judge" for t in threading.enumerate())  # still trickling
    lab.service.stop(5.0)  # cancels the fetch, and waits for the thread that judges it
    assert [t for t in threading.enumerate() if t.name == "model-judge"] == []


def test_a_stop_while_the_trial_waits_is_an_interruption(lab):
    lab.service.start(lab.sup)
    installed(lab, "1.0.0")
    lab.sup.frames.clear()
    update(lab, "2.0.0", "cut")
    lab.states.waiting("cut")
    lab.service.stop(5.0)
    final = lab.states.final("cut")
    assert (final["state"], final["reason"], final["version"]) == (
        "failed",
        "interrupted",
        "2.0.0",
    ), final
    assert pointer(lab)["version"] == "1.0.0"
    # Answered once, at the stop (the model topic is durable): nothing left for the next
    # start to answer again.
    assert not (lab.tmp / "state" / FILE_NAME).exists()


def _stop_while_loading(lab, request_id: str, state: str) -> dict:
    """Stop the service while ``request_id``'s model load (blocked) is in ``state``; the
    load finishes after the stop began. Returns the request's final state."""
    lab.states.wait(lambda items: any(s["state"] == state for s in lab.states.of(request_id)))
    stopper = threading.Thread(target=lab.service.stop, args=(10.0,))
    stopper.start()
    while not lab.service._stop.is_set():
        time.sleep(0.005)
    lab.sup.release.set()
    stopper.join(10)
    return lab.states.final(request_id)


def test_a_stop_during_verification_is_an_interruption_not_a_failed_swap(lab):
    lab.service.start(lab.sup)
    installed(lab, "1.0.0")
    lab.sup.block_prepare.set()  # the validator's model load is slow
    update(lab, "2.0.0", "slow")
    final = _stop_while_loading(lab, "slow", "verifying")
    assert (final["state"], final["reason"]) == ("failed", "interrupted"), final
    assert pointer(lab)["version"] == "1.0.0"


def test_a_stop_during_a_rollbacks_switch_is_an_interruption(lab):
    lab.service.start(lab.sup)
    installed(lab, "1.0.0", "1.1.0")
    lab.sup.block_prepare.set()  # loading the rollback's target is slow
    rollback(lab, "rb")
    final = _stop_while_loading(lab, "rb", "installing")
    assert (final["state"], final["reason"]) == ("failed", "interrupted"), final
    assert pointer(lab)["version"] == "1.1.0"


def test_commands_before_startup_are_kept_and_run_once_started(lab):
    for i in range(3):  # queue_depth 2: two kept, the third refused with its id
        rollback(lab, f"early{i}")
    refused = lab.states.final("early2")
    assert (refused["state"], refused["reason"]) == ("failed", "busy"), refused
    assert lab.states.of("early0") == []
    lab.service.start(lab.sup)
    for rid in ("early0", "early1"):
        final = lab.states.final(rid)
        assert (final["state"], final["reason"]) == ("failed", "no_previous"), final
