"""Tier 3: a release switched in while the camera is down is judged by frames, not by time.

The daemon runs with a camera whose file does not exist yet (a camera unplugged, a stream
down). A release that fails on every real frame (``fails_on_input.tflite``, see
test_updates_rollback.py) is pushed meanwhile: the health check has no frame to judge it
by, so the release serves on trial (``installing``/``waiting_for_frames``), the previous
release stays the rollback target on disk, and no final state is published. When the
camera comes back, the frames fail and the daemon goes back by itself, as it would have
with the camera up.
"""

from __future__ import annotations

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.broker import wait_until
from tests.support.paths import fixture_model
from tests.support.updates_e2e import (
    Operator,
    envelope_of,
    pack_release,
    retained,
    serve_dir,
    updates_config,
    version_of,
    wait_results,
    wait_terminal,
    write_bright_clip,
    write_public_key,
)
from tests.support.updates_http import FileServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


def camera_state(broker, topics) -> str:
    """cam0's state in the retained status."""
    return retained(broker, topics.status).get("cameras", {}).get("cam0", {}).get("state", "")


def test_a_release_switched_in_with_the_camera_down_is_judged_when_frames_come(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    key = Ed25519PrivateKey.generate()
    public = write_public_key(key, tmp_path / "release.pub")
    labels = fixture_model("color_labels.txt")
    common = {"labels": labels, "task": "classification"}
    good, bad = fixture_model("color_uint8.tflite"), fixture_model("fails_on_input.tflite")
    rel_good = pack_release(tmp_path / "releases", key, "colors", "1.0.0", good, **common)
    rel_bad = pack_release(tmp_path / "releases", key, "colors", "2.0.0", bad, **common)
    camera = tmp_path / "cam.avi"  # not there yet: the camera is down
    daemon = edge_daemon(
        mqtt_broker.port,
        camera,
        good,
        labels,
        model={"threshold": 0.0},
        mqtt={"publish_every_frame": True},
        updates=updates_config(public, health_frames=5),
    )
    sub, topics = mqtt_subscriber, daemon.topics
    sub.wait_for(topics.available, lambda m: m.payload == b"online", timeout=30)
    pointer = daemon.dir / "state" / "models" / "active"
    with FileServer() as server:
        operator = Operator(mqtt_broker.host, mqtt_broker.port)
        try:
            # 1.0.0 with the camera down too: it waits as well, then frames confirm it.
            first = operator.update(topics.base, envelope_of(rel_good), serve_dir(server, rel_good))
            sub.wait_for(
                topics.model,
                lambda m: (
                    m.json().get("request_id") == first
                    and m.json().get("reason") == "waiting_for_frames"
                ),
                timeout=40,
            )
            os.replace(write_bright_clip(tmp_path / "clip.avi"), camera)  # the camera is back
            assert wait_terminal(sub, topics.model, first, timeout=40)["state"] == "active"
            wait_results(sub, topics.results, 3, where=lambda r: r["model"]["version"] == "1.0.0")
            assert "trial" not in json.loads(pointer.read_text())

            camera.unlink()  # down again: the looping camera cannot reopen its file
            wait_until(
                lambda: camera_state(mqtt_broker, topics) == "reconnecting", 30, "camera down"
            )
            rid = operator.update(topics.base, envelope_of(rel_bad), serve_dir(server, rel_bad))
            waiting = sub.wait_for(
                topics.model,
                lambda m: (
                    m.json().get("request_id") == rid
                    and m.json().get("reason") == "waiting_for_frames"
                ),
                timeout=40,
            ).json()
            assert (waiting["state"], waiting["version"]) == ("installing", "2.0.0"), waiting
            on_disk = json.loads(pointer.read_text())
            assert (on_disk["version"], on_disk.get("trial")) == ("2.0.0", True), on_disk
            assert on_disk["previous"]["version"] == "1.0.0"
            now = retained(mqtt_broker, topics.model)  # the last word is not a final one
            assert (now["request_id"], now["reason"]) == (rid, "waiting_for_frames"), now

            n = len(sub.on(topics.results))
            os.replace(write_bright_clip(tmp_path / "again.avi"), camera)  # back again
            final = wait_terminal(sub, topics.model, rid, timeout=40)
            assert (final["state"], final["reason"]) == ("rolled_back", "health_check_failed")
            assert (final["version"], final["from_version"]) == ("1.0.0", "colors@2.0.0"), final
            after = wait_results(sub, topics.results, 5, after=n, daemon=daemon)
            assert {version_of(r) for r in after} == {("colors", "1.0.0")}
            on_disk = json.loads(pointer.read_text())
            assert (on_disk["version"], on_disk.get("trial")) == ("1.0.0", None), on_disk
            assert daemon.alive()
        finally:
            operator.close()
