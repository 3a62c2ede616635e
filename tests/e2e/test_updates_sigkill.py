"""Tier 3: the daemon SIGKILLed at random points of model updates comes back on a valid model.

One state directory, many daemon lives: each life checks what the daemon serves after
the restart, sends an update to the next version, and is SIGKILLed (the whole process
group: daemon, forkserver, workers, like a power cut) after a random delay, landing
before the command, in the download, in validation, in the swap, in the health check
or after it. Every restart must run the old or the new release, complete, and say so
consistently on the retained ``model`` topic and in its results.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.paths import fixture_model
from tests.support.updates_e2e import (
    DEMO,
    Operator,
    envelope_of,
    pack_release,
    payloads,
    serve_dir,
    states_of,
    updates_config,
    version_of,
    wait_results,
    wait_terminal,
    write_bright_clip,
    write_public_key,
)
from tests.support.updates_http import FileServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

LIVES = 20
MAX_DELAY = 1.6  # seconds after the command: an update takes about 1 s here


def test_sigkill_at_random_points_of_updates(tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon):
    rng = random.Random(20251121)
    key = Ed25519PrivateKey.generate()
    public = write_public_key(key, tmp_path / "release.pub")
    state_dir = tmp_path / "state"
    sub = mqtt_subscriber
    started = time.monotonic()
    killed_in: Counter[str] = Counter()
    served: Counter[str] = Counter()
    expected = {("color_blobs", "")}  # before any update: the configured model
    with FileServer() as server:
        operator = Operator(mqtt_broker.host, mqtt_broker.port)
        try:
            for life in range(LIVES + 1):
                daemon = edge_daemon(
                    mqtt_broker.port,
                    DEMO / "clip.avi",
                    DEMO / "color_blobs.tflite",
                    DEMO / "labels.txt",
                    start=False,
                    device={"state_dir": str(state_dir)},
                    updates=updates_config(public, health_frames=8),
                )
                topics = daemon.topics
                n_results, n_states = len(sub.on(topics.results)), len(sub.on(topics.model))
                life_started = time.time()
                daemon.start()
                # Only this life's frames: results the killed daemon had handed to the
                # broker may still reach the subscriber after the kill (seen under load).
                first = wait_results(
                    sub,
                    topics.results,
                    3,
                    after=n_results,
                    where=lambda r, t=life_started: r["timestamp"] >= t,
                    timeout=30,
                    daemon=daemon,
                )
                now = {version_of(r) for r in first}
                assert len(now) == 1 and now <= expected, (
                    f"life {life}: serving {now}, expected one of {expected}"
                )
                # The state a restarted daemon announces (no request id) names what runs.
                announced = [
                    s for s in payloads(sub, topics.model, n_states) if s["request_id"] is None
                ]
                assert announced and announced[0]["state"] == "active", announced
                name, version = next(iter(now))
                if version:
                    assert (announced[0]["name"], announced[0]["version"]) == (name, version)
                else:
                    # The configured model: no release yet, or recovery undid one on trial.
                    first = announced[0]
                    assert first["name"] is None, first
                    assert first["reason"] in ("configured", "trial_abandoned", "fallback"), first
                    assert (first["reason"] == "configured") == ("from_version" not in first)
                served[version or "configured"] += 1
                if life == LIVES:
                    assert daemon.stop(timeout=10) == 0
                    break
                target = f"1.{life + 1}.0"
                release = pack_release(
                    tmp_path / "releases", key, "demo", target, DEMO / "color_blobs.tflite",
                    labels=DEMO / "labels.txt", task="detection-ssd",
                )  # fmt: skip
                # A slow download (about 0.3 s), so that kills land inside it too.
                base = serve_dir(server, release, throttle=0.02)
                rid = operator.update(topics.base, envelope_of(release), base)
                time.sleep(rng.uniform(0.0, MAX_DELAY))
                daemon.kill_group()
                steps = [s["state"] for s in states_of(sub, topics.model, rid)]
                killed_in[steps[-1] if steps else "before the command ran"] += 1
                expected = now | {("demo", target)}
        finally:
            operator.close()
    elapsed = time.monotonic() - started
    models = state_dir / "models"
    # The last life recovered the store and stopped cleanly: no leftovers, nothing on trial.
    assert not (models / ".staging").exists() and not (models / ".trash").exists()
    if (models / "active").exists():
        assert "trial" not in json.loads((models / "active").read_text())
        installed = sorted(p.name for p in (models / "demo").iterdir())
        assert 1 <= len(installed) <= 4, installed  # active + keep_versions (3)
    print(
        f"{LIVES} SIGKILLs in {elapsed:.0f}s; last state seen before each kill: "
        f"{dict(killed_in)}; served after restart: {dict(served)}"
    )


def test_sigkill_while_a_bad_release_is_on_trial_restarts_on_the_previous_one(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    """A release is only kept once healthy: a crash during its health check undoes it.

    ``fails_on_input`` fails on every frame of the bright clip, but at 1 frame/s the
    daemon runs it for up to a second before the health check sees the first failure.
    The daemon is SIGKILLed inside that second (right after it logs the switch).
    """
    key = Ed25519PrivateKey.generate()
    public = write_public_key(key, tmp_path / "release.pub")
    labels = fixture_model("color_labels.txt")
    good = fixture_model("color_uint8.tflite")
    clip = write_bright_clip(tmp_path / "bright.avi", frames=8, fps=1.0)
    state_dir = tmp_path / "state"
    sub = mqtt_subscriber

    def life():
        return edge_daemon(
            mqtt_broker.port, clip, good, labels, device={"state_dir": str(state_dir)},
            model={"threshold": 0.0}, mqtt={"publish_every_frame": True},
            updates=updates_config(public, health_frames=2),
        )  # fmt: skip

    common = {"labels": labels, "task": "classification"}
    releases = tmp_path / "releases"
    first = pack_release(releases, key, "colors", "1.0.0", good, **common)
    daemon = life()
    topics = daemon.topics
    wait_results(sub, topics.results, 1, timeout=30, daemon=daemon)
    with FileServer() as server:
        operator = Operator(mqtt_broker.host, mqtt_broker.port)
        try:
            rid = operator.update(topics.base, envelope_of(first), serve_dir(server, first))
            assert wait_terminal(sub, topics.model, rid, timeout=20)["state"] == "active"
            for attempt in range(4):  # the kill must beat the first frame on the bad model
                bad = pack_release(
                    releases, key, "colors", f"2.0.{attempt}",
                    fixture_model("fails_on_input.tflite"), **common,
                )  # fmt: skip
                mark = len(daemon.log())
                rid = operator.update(topics.base, envelope_of(bad), serve_dir(server, bad))
                daemon.wait_log(rf'"version": "2\.0\.{attempt}"', timeout=20, after=mark)
                daemon.kill_group()
                if "unhealthy after the switch" not in daemon.log()[mark:]:
                    break
                daemon = life()  # it rolled back before the kill: try again
                wait_results(sub, topics.results, 1, after=len(sub.on(topics.results)),
                             timeout=30, daemon=daemon)  # fmt: skip
            else:
                pytest.skip("the health check always failed before the kill landed")
        finally:
            operator.close()
    pointer = json.loads((state_dir / "models" / "active").read_text())
    assert (pointer["version"], pointer.get("trial")) == (f"2.0.{attempt}", True), pointer
    n, n_states = len(sub.on(topics.results)), len(sub.on(topics.model))
    daemon = life()
    later = wait_results(sub, topics.results, 3, after=n, timeout=20, daemon=daemon)
    assert {version_of(r) for r in later} == {("colors", "1.0.0")}
    announced = [s for s in payloads(sub, topics.model, n_states) if s["request_id"] is None]
    assert (announced[0]["state"], announced[0]["version"]) == ("active", "1.0.0"), announced
    assert not (state_dir / "models" / "colors" / f"2.0.{attempt}").exists()
    assert daemon.stop(timeout=10) == 0
