"""Chaos: duplicated and concurrent model commands, and a store that must fall back.

QoS 1 redelivers and operators retry, so a device sees the same command many times and
many commands at once. The daemon runs the demo detector from its config; updates are
signed releases of it (``blobs``) served by a loopback HTTP server that throttles the
model file, so commands arrive while an install is running.

1. The same command 50 times, at once: one install (one download at the server), and
   every final state of that request id is ``active``; no ``busy``, no ``not_newer``.
2. 12 distinct commands at once (a queue of 4): 12 final states, each under its own
   request id (installed, ``already_active`` after waiting in the queue, or ``busy``).
3. The active release's model file deleted while the daemon is stopped: at the next
   start the store falls back to the previous release and the ``model`` topic says so
   (reason ``fallback``, the release it left, why).
4. An active release whose files verify but whose model will not load at startup: the
   daemon runs its configured model, and the ``model`` topic says so too.
"""

from __future__ import annotations

import collections
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.updates.commands import build_update_command
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.signing import TrustedKeys
from edge_agent.updates.store import ModelStore
from tests.support.broker import MOSQUITTO, MqttSubscriber
from tests.support.chaos import DEMO, DemoReleases, figure
from tests.support.daemon import DaemonProcess
from tests.support.updates_e2e import (
    Operator,
    retained,
    updates_config,
    wait_results,
    wait_terminal,
    write_public_key,
)
from tests.support.updates_http import FileServer, Route
from tests.support.updates_release import fake_tflite, install_local, make_release

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(180),
    pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (apt-get install mosquitto)"),
]

TERMINAL = ("active", "failed", "rolled_back")
THROTTLE_S = 0.05  # per 8 KiB: the 117 KiB model downloads in about 0.75 s


class Lab:
    """A daemon on the demo model, its release server, and the operator's client."""

    def __init__(self, tmp_path, broker, edge_daemon, server, **updates):
        key = Ed25519PrivateKey.generate()
        pub = write_public_key(key, tmp_path / "trusted.pub")
        self.releases = DemoReleases(tmp_path / "releases", key)
        self.server, self.broker = server, broker
        self.config = {"updates": updates_config(pub, health_frames=3, **updates)}
        self.daemon = edge_daemon(
            broker.port, DEMO / "clip.avi", DEMO / "color_blobs.tflite", DEMO / "labels.txt",
            **self.config,
        )  # fmt: skip
        self.topics = self.daemon.topics
        self.sub = MqttSubscriber(broker.host, broker.port, [self.topics.model]).start()
        self.results = MqttSubscriber(broker.host, broker.port, [self.topics.results]).start()
        wait_results(self.results, self.topics.results, 3, timeout=30, daemon=self.daemon)
        self.operator = Operator(broker.host, broker.port)

    def command(self, version: str, rid: str, throttle: float = THROTTLE_S) -> bytes:
        """Serve a release; the update command that installs it."""
        rel = self.releases.make(version)
        base = f"/{self.releases.name}/{version}/"
        for name, data in rel.files.items():
            slow = throttle if name.endswith(".tflite") else 0.0
            self.server.add(base + name, Route(body=data, throttle=slow))
        return build_update_command(
            envelope=rel.envelope, base_url=self.server.url(base), request_id=rid
        )

    def send(self, payload: bytes) -> None:
        self.operator.publish(f"{self.topics.base}/cmd/model/update", payload)

    def finals(self, rid: str) -> list[dict]:
        """Every final state published for a request, in order."""
        docs = (m.json() for m in self.sub.on(self.topics.model))
        return [d for d in docs if d.get("request_id") == rid and d.get("state") in TERMINAL]

    def sentinel(self, rid: str = "sentinel") -> dict:
        """A broken command sent last: once it is answered, every earlier one was filed."""
        self.send(b'{"request_id": "%s"}' % rid.encode())
        return wait_terminal(self.sub, self.topics.model, rid, timeout=60)

    def restart(self, before_start=lambda: None) -> None:
        """Stop the daemon cleanly, run ``before_start``, start it again on the same dir."""
        assert self.daemon.stop(timeout=15) == 0
        before_start()
        self.daemon = DaemonProcess(
            self.daemon.dir, self.broker.port, DEMO / "clip.avi", DEMO / "color_blobs.tflite",
            DEMO / "labels.txt", **self.config,
        ).start()  # fmt: skip

    def close(self) -> None:
        if self.daemon.alive():
            self.daemon.kill_group()
        self.operator.close()
        self.sub.stop()
        self.results.stop()


@pytest.fixture
def lab(tmp_path, mqtt_broker, edge_daemon):
    with FileServer() as server:
        made = []

        def make(**updates):
            made.append(Lab(tmp_path, mqtt_broker, edge_daemon, server, **updates))
            return made[-1]

        yield make
        for each in made:
            each.close()


def test_the_same_command_fifty_times_installs_once_and_ends_active(lab):
    lab = lab()
    payload = lab.command("1.0.0", "req-dup")
    started = time.monotonic()
    for _ in range(50):
        lab.send(payload)
    first = wait_terminal(lab.sub, lab.topics.model, "req-dup", timeout=60)
    took = time.monotonic() - started
    lab.sentinel()
    finals = lab.finals("req-dup")
    downloads = lab.server.routes["/blobs/1.0.0/color_blobs.tflite"].hits
    states = [m.json() for m in lab.sub.on(lab.topics.model)]
    busy = [s for s in states if s.get("reason") == "busy"]
    figure(
        "duplicate_commands", sent=50, installs=downloads, final_states=len(finals),
        busy=len(busy), seconds_to_active=took,
    )  # fmt: skip
    assert (first["state"], first["version"]) == ("active", "1.0.0"), first
    assert downloads == 1
    assert {(s["state"], s["version"]) for s in finals} == {("active", "1.0.0")}, finals
    assert busy == [] and not [s for s in states if s.get("reason") == "not_newer"]
    installs = [s for s in states if s["state"] == "installing" and s["request_id"] == "req-dup"]
    assert len(installs) == 1
    # The retained answer for the request is the one a late subscriber sees: active.
    lab.send(payload)
    doc = wait_terminal(lab.sub, lab.topics.model, "req-dup", timeout=10)
    assert doc["state"] == "active" and doc["serving"] == {"name": "blobs", "version": "1.0.0"}
    assert lab.daemon.alive()


def test_twelve_distinct_commands_at_once_get_twelve_final_states(lab, mqtt_broker):
    lab = lab(queue_depth=4)
    rids = [f"req-{i}" for i in range(12)]
    payloads = [lab.command("1.0.0", rid) for rid in rids]
    for payload in payloads:
        lab.send(payload)
    for rid in rids:
        wait_terminal(lab.sub, lab.topics.model, rid, timeout=60)
    lab.sentinel()
    finals = {rid: lab.finals(rid) for rid in rids}
    outcome = collections.Counter((f[0]["state"], f[0]["reason"]) for f in finals.values())
    nulls = [m.json() for m in lab.sub.on(lab.topics.model) if m.json()["request_id"] is None]
    figure(
        "concurrent_commands", sent=12, final_states=sum(len(f) for f in finals.values()),
        **{f"{s}_{r or 'ok'}": n for (s, r), n in sorted(outcome.items(), key=str)},
    )  # fmt: skip
    assert all(len(f) == 1 for f in finals.values()), finals
    assert outcome[("active", None)] == 1, outcome
    assert set(outcome) <= {("active", None), ("active", "already_active"), ("failed", "busy")}
    assert outcome[("active", "already_active")] <= 4, outcome
    assert lab.server.routes["/blobs/1.0.0/color_blobs.tflite"].hits == 1
    assert [s["state"] for s in nulls] == ["active"], nulls  # only the startup state
    assert retained(mqtt_broker, lab.topics.model)["request_id"] == "sentinel"


def test_a_store_fallback_is_reported_on_the_model_topic(lab, mqtt_broker):
    lab = lab()
    for version in ("1.0.0", "2.0.0"):
        lab.send(lab.command(version, f"v{version}", throttle=0.0))
        assert wait_terminal(lab.sub, lab.topics.model, f"v{version}")["state"] == "active"
    seen = len(lab.sub.on(lab.topics.model))
    lab.restart(lambda: (lab.daemon.dir / "state/models/blobs/2.0.0/color_blobs.tflite").unlink())
    doc = lab.sub.wait_for(
        lab.topics.model,
        lambda m: m in lab.sub.on(lab.topics.model)[seen:] and m.json()["request_id"] is None,
        timeout=30,
    ).json()
    figure("store_fallback", reason=doc["reason"], from_version=doc.get("from_version"))
    assert (doc["state"], doc["name"], doc["version"]) == ("active", "blobs", "1.0.0"), doc
    assert doc["reason"] == "fallback" and doc["from_version"] == "blobs@2.0.0", doc
    assert "color_blobs.tflite" in doc["message"] and "fell back to blobs@1.0.0" in doc["message"]
    assert doc["serving"] == {"name": "blobs", "version": "1.0.0"}
    assert retained(mqtt_broker, lab.topics.model)["reason"] == "fallback"
    later = len(lab.results.on(lab.topics.results))
    got = wait_results(lab.results, lab.topics.results, 3, after=later, daemon=lab.daemon)
    assert {r["model"]["version"] for r in got} == {"1.0.0"}


def test_an_installed_release_that_will_not_start_is_reported_on_the_model_topic(lab):
    lab = lab()
    broken = make_release(
        lab.releases.root, lab.releases.key, "2.0.0", name="blobs",
        files={"color_blobs.tflite": ("model", fake_tflite(20_000, seed=7)),
               "labels.txt": ("labels", (DEMO / "labels.txt").read_bytes())},
        task="auto",
    )  # fmt: skip

    def install_broken():  # every file verifies; the model only fails when loaded
        state = lab.daemon.dir / "state"
        installer = UpdateInstaller(
            ModelStore(state), TrustedKeys([lab.releases.key.public_key()]), UpdateSettings()
        )
        install_local(installer, broken.dir)

    seen = len(lab.sub.on(lab.topics.model))
    lab.restart(install_broken)
    doc = lab.sub.wait_for(
        lab.topics.model,
        lambda m: m in lab.sub.on(lab.topics.model)[seen:] and m.json()["request_id"] is None,
        timeout=30,
    ).json()
    assert doc["serving"]["name"] != "blobs", doc  # the configured model runs
    assert (doc["state"], doc["reason"], doc.get("from_version")) == (
        "active", "fallback", "blobs@2.0.0"
    ), doc  # fmt: skip
    assert (doc["name"], doc["version"]) == (None, None), doc
