"""Chaos: the state disk fills up while the daemon spools results and downloads a model.

The daemon's state directory (spool and model store) is a 16 MiB tmpfs mounted for the
test (skipped when mounting is not possible, i.e. not root). Two faults, one daemon:

1. Spooling: the broker is stopped, results go to the on-disk spool, then the disk is
   filled to the last byte. The spool write fails with ENOSPC: the daemon logs it
   ("disk full; keeping messages in memory") and keeps the results, in order, in memory.
   Space is freed and the broker restarted: every result of the run arrives, in order,
   including those spooled before the disk filled (the spool was not corrupted).
2. Downloading: an update (release ``blobs`` 2.0.0, throttled download) starts with room
   to spare; mid-download the disk is filled. The update fails with a clear reason on the
   retained ``model`` topic, the active release (1.0.0) is untouched byte for byte, no
   staging leftovers remain, and results keep coming from 1.0.0. With space back, the
   same update succeeds.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.updates.commands import build_update_command
from tests.support.broker import MOSQUITTO, MqttSubscriber, wait_until
from tests.support.chaos import (
    DEMO,
    DemoReleases,
    active_release,
    figure,
    fill_disk,
    first_occurrences,
    free_bytes,
    missing_ids,
    running_daemon,
    store_problems,
    tmpfs,
)
from tests.support.updates_http import FileServer, Route
from tests.support.updates_release import snapshot

DISK = "16m"
FULL_S = 3.0

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(180),
    pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (apt-get install mosquitto)"),
]


def trusted_key(tmp_path) -> tuple[Ed25519PrivateKey, str]:
    """A signing key and the path of its public key file."""
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "trusted.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, str(pub)


def update(sub, topics, server, releases, version, rid, throttle=0.0) -> None:
    """Serve a release and send its update command."""
    rel = releases.make(version)
    base = f"/{releases.name}/{version}/"
    for name, data in rel.files.items():
        server.add(base + name, Route(body=data, throttle=throttle))
    payload = build_update_command(envelope=rel.envelope, base_url=server.url(base), request_id=rid)
    sub._client.publish(f"{topics.base}/cmd/model/update", payload, qos=1)


def model_state(sub, topics, rid, states) -> dict | None:
    """The latest model-update state for a request if it is one of ``states``."""
    docs = [m.json() for m in sub.on(topics.model) if m.json().get("request_id") == rid]
    return docs[-1] if docs and docs[-1]["state"] in states else None


def test_disk_full_while_spooling_and_downloading(tmp_path, mqtt_broker_factory):
    broker = mqtt_broker_factory("mosquitto", persistent=True)
    key, pub = trusted_key(tmp_path)
    releases = DemoReleases(tmp_path / "releases", key)
    workdir = tmp_path / "daemon"
    state = workdir / "state"
    models, filler = state / "models", state / "filler"
    with contextlib.ExitStack() as stack:
        stack.enter_context(tmpfs(state, DISK))
        server = stack.enter_context(FileServer())
        daemon = stack.enter_context(
            running_daemon(
                workdir,
                broker.port,
                DEMO / "clip.avi",
                DEMO / "color_blobs.tflite",
                DEMO / "labels.txt",
                mqtt={"publish_every_frame": True, "reconnect_min": 0.2, "reconnect_max": 1.0},
                updates={
                    "enabled": True,
                    "trusted_keys": [pub],
                    "allow_http": True,
                    "allowed_hosts": ["127.0.0.1"],
                    "health_frames": 5,
                    "retries": 0,
                },
            )
        )
        topics = daemon.topics
        sub = MqttSubscriber(
            broker.host,
            broker.port,
            [topics.results, topics.model, topics.status],
            persistent=True,
        ).start()
        try:
            sub.wait_count(topics.results, 10, timeout=30)
            update(sub, topics, server, releases, "1.0.0", "v1")
            wait_until(lambda: model_state(sub, topics, "v1", ("active",)), 30, "1.0.0")
            before = snapshot(models)

            # ---- 1. disk full while spooling ----
            mark = len(daemon.log())
            broker.stop()
            daemon.wait_log(r"messages spooled", timeout=10, after=mark)
            time.sleep(2.0)  # ~30 results on disk
            spool_files = sorted(p.name for p in (state / "spool").iterdir())
            fill_disk(filler)
            full_wall = time.time()
            match = daemon.wait_log(r"mqtt \S+: (.*disk full).*keeping messages in memory",
                                        timeout=10, after=mark)  # fmt: skip
            spool_error = match.group(1)
            time.sleep(FULL_S)
            assert daemon.alive(), "daemon died with the disk full"
            filler.unlink()
            freed_wall = time.time()
            mark = len(daemon.log())
            broker.start()
            daemon.wait_log(r"mqtt \S+: connected", timeout=10, after=mark)
            sub.wait_for(topics.results, lambda m: m.json()["timestamp"] > freed_wall + 1.0, 30)
            got = [m.json()["frame_id"] for m in sub.on(topics.results)]
            during_full = sum(
                full_wall <= m.json()["timestamp"] <= freed_wall for m in sub.on(topics.results)
            )

            # ---- 2. disk full while downloading ----
            update(sub, topics, server, releases, "2.0.0", "v2a", throttle=0.25)
            wait_until(lambda: model_state(sub, topics, "v2a", ("downloading",)), 10, "download")
            free_then = free_bytes(state)
            fill_disk(filler)
            failed = wait_until(
                lambda: model_state(sub, topics, "v2a", ("failed", "rolled_back")),
                20,
                "update failed",
            )
            filled_model = sub.on(topics.results)[-1].json()["timestamp"]
            sub.wait_for(topics.results, lambda m: m.json()["timestamp"] > filled_model, 10)
            serving = sub.on(topics.results)[-1].json()["model"]
            after_fail = snapshot(models)
            pointer = active_release(models)
            staging = list(models.glob(".staging/*"))
            filler.unlink()
            update(sub, topics, server, releases, "2.0.0", "v2b")
            wait_until(lambda: model_state(sub, topics, "v2b", ("active",)), 30, "2.0.0")
            now = time.time()
            recovered = sub.wait_for(
                topics.results, lambda m: m.json()["timestamp"] > now, 10
            ).json()["model"]
            assert daemon.stop(timeout=15) == 0
            log = daemon.log()
        finally:
            sub.stop()

    unique = first_occurrences(got)
    lost = missing_ids(unique)
    figure(
        "disk_full_spool",
        spool_files_before=len(spool_files),
        results_while_full=during_full,
        received=len(unique),
        lost=len(lost),
        dup=len(got) - len(unique),
        reordered=int(unique != sorted(unique)),
        error=repr(spool_error),
    )
    figure(
        "disk_full_download",
        free_at_fill=free_then,
        state=failed["state"],
        reason=failed["reason"],
        active_untouched=int(after_fail == before and pointer == ("blobs", "1.0.0")),
        staging_left=len(staging),
        serving=f"{serving['name']}@{serving['version']}",
        after_space_back=f"{recovered['name']}@{recovered['version']}",
    )
    print(f"update error message: {failed['message']}")
    assert spool_files, "nothing was spooled before the disk filled"
    assert during_full >= FULL_S * 15 * 0.8
    assert lost == [], f"{len(lost)} results lost: {lost[:20]}"
    assert unique == sorted(unique)
    assert failed["state"] == "failed" and failed["reason"] == "no_space", failed
    assert "No space left on device" in failed["message"], failed
    assert "No space left on device" in log
    assert after_fail == before, "the active release changed on disk"
    assert pointer == ("blobs", "1.0.0")
    assert staging == []
    assert store_problems(models) == []
    assert (serving["name"], serving["version"]) == ("blobs", "1.0.0")
    assert (recovered["name"], recovered["version"]) == ("blobs", "2.0.0")
