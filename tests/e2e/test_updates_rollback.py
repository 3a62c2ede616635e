"""Tier 3: a release that passes validation but fails on real frames is rolled back.

``fails_on_input.tflite`` (tests/fixtures/README.md) loads, allocates and warms up, so
the daemon's validator accepts it; on a frame without a black pixel its GATHER indexes
out of range and invoke fails. The clip here keeps every pixel >= 60, so after the hot
swap every frame fails: the health check must notice, switch the previous model back in
by itself and report ``rolled_back``. The manual ``cmd/model/rollback`` command must
go back one version the same way, between two frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.paths import fixture_model
from tests.support.updates_e2e import (
    FLOOR,
    Operator,
    envelope_of,
    gaps,
    group_processes,
    pack_release,
    payloads,
    retained,
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

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FIXTURE_SCORES = [[192, 64, 32]]


def first_frame(path: Path) -> np.ndarray:
    """Frame 0 of a clip, decoded (what the camera hands the pipeline)."""
    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read()
    finally:
        cap.release()
    assert ok, f"cannot read {path}"
    return frame


@pytest.mark.parametrize("runtime", ["ai_edge_litert.interpreter", "tflite_runtime.interpreter"])
def test_fixture_warms_up_on_zeros_and_fails_at_invoke_on_a_clip_frame(tmp_path, runtime):
    module = pytest.importorskip(runtime)
    frame = first_frame(write_bright_clip(tmp_path / "bright.avi", frames=2))
    assert frame.min() >= FLOOR // 2, frame.min()  # what JPEG left of the floor
    interpreter = module.Interpreter(model_path=str(fixture_model("fails_on_input.tflite")))
    interpreter.allocate_tensors()  # allocation succeeds: only invoke can tell
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    assert inp["shape"].tolist() == [1, 32, 32, 3] and out["shape"].tolist() == [1, 3]
    interpreter.set_tensor(inp["index"], np.zeros((1, 32, 32, 3), np.uint8))
    interpreter.invoke()
    assert interpreter.get_tensor(out["index"]).tolist() == FIXTURE_SCORES
    image = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (32, 32))[None]
    interpreter.set_tensor(inp["index"], image)
    with pytest.raises(RuntimeError, match="gather index out of bounds"):
        interpreter.invoke()
    interpreter.set_tensor(inp["index"], np.zeros((1, 32, 32, 3), np.uint8))
    interpreter.invoke()  # the interpreter is still usable
    assert interpreter.get_tensor(out["index"]).tolist() == FIXTURE_SCORES


def test_unhealthy_release_is_switched_back_then_manual_rollback(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    key = Ed25519PrivateKey.generate()
    public = write_public_key(key, tmp_path / "release.pub")
    releases = tmp_path / "releases"
    labels = fixture_model("color_labels.txt")
    common = {"labels": labels, "task": "classification"}
    good = fixture_model("color_uint8.tflite")
    rel_good = pack_release(releases, key, "colors", "1.0.0", good, **common)
    rel_bad = pack_release(
        releases, key, "colors", "2.0.0", fixture_model("fails_on_input.tflite"), **common
    )
    rel_next = pack_release(releases, key, "colors", "2.1.0", good, **common)
    clip = write_bright_clip(tmp_path / "bright.avi")
    daemon = edge_daemon(
        mqtt_broker.port,
        clip,
        good,
        labels,
        model={"threshold": 0.0},
        mqtt={"publish_every_frame": True},
        updates=updates_config(public),
    )
    sub, topics = mqtt_subscriber, daemon.topics
    wait_results(sub, topics.results, 5, timeout=30, daemon=daemon)
    with FileServer() as server:
        operator = Operator(mqtt_broker.host, mqtt_broker.port)
        try:
            rid = operator.update(topics.base, envelope_of(rel_good), serve_dir(server, rel_good))
            assert wait_terminal(sub, topics.model, rid)["state"] == "active"
            n = len(sub.on(topics.results))
            wait_results(
                sub, topics.results, 5, after=n, where=lambda r: r["model"]["version"] == "1.0.0"
            )
            processes = group_processes(daemon.pid)

            # --- automatic: the swap happens, the health check fails, the daemon goes back
            n = len(sub.on(topics.results))
            sent = time.monotonic()
            rid = operator.update(topics.base, envelope_of(rel_bad), serve_dir(server, rel_bad))
            final = wait_terminal(sub, topics.model, rid, timeout=40)
            auto_s = time.monotonic() - sent
            steps = [s["state"] for s in states_of(sub, topics.model, rid)]
            assert steps[-2:] == ["installing", "rolled_back"], steps
            assert final["reason"] == "health_check_failed", final
            assert (final["name"], final["version"]) == ("colors", "1.0.0"), final
            assert final["from_version"] == "colors@2.0.0", final
            assert "gather index out of bounds" in final["message"], final
            assert retained(mqtt_broker, topics.model) == final
            daemon.wait_log(r"model colors@2\.0\.0: unhealthy after the switch", timeout=5)
            after = wait_results(sub, topics.results, 10, after=n, daemon=daemon)
            # Frames that failed on 2.0.0 are dropped; every published one is from 1.0.0.
            assert {version_of(r) for r in after} == {("colors", "1.0.0")}
            ids = [r["frame_id"] for r in after]
            lost = sum(b - a - 1 for a, b in gaps(ids))
            assert (daemon.dir / "state/models/colors/1.0.0").is_dir()
            assert not (daemon.dir / "state/models/colors/2.0.0").exists()
            assert daemon.alive() and group_processes(daemon.pid) == processes

            # --- manual: a newer good release, then the rollback command
            rid = operator.update(topics.base, envelope_of(rel_next), serve_dir(server, rel_next))
            assert wait_terminal(sub, topics.model, rid)["version"] == "2.1.0"
            n = len(sub.on(topics.results))
            wait_results(
                sub, topics.results, 5, after=n, where=lambda r: r["model"]["version"] == "2.1.0"
            )
            sent = time.monotonic()
            rid = operator.rollback(topics.base, "manual-rb-1")
            final = wait_terminal(sub, topics.model, rid, timeout=30)
            manual_s = time.monotonic() - sent
        finally:
            operator.close()
    assert (final["state"], final["reason"]) == ("rolled_back", "requested"), final
    assert (final["name"], final["version"], final["from_version"]) == (
        "colors", "1.0.0", "colors@2.1.0",
    )  # fmt: skip
    n = len(sub.on(topics.results))
    wait_results(sub, topics.results, 10, after=n, daemon=daemon)
    results = payloads(sub, topics.results)
    versions = [r["model"]["version"] for r in results]
    first = len(versions) - 1 - versions[::-1].index("2.1.0") + 1  # first 1.0.0 after 2.1.0
    assert set(versions[first:]) == {"1.0.0"}, versions[first - 3 :]
    window = [r["frame_id"] for r in results[first - 5 : first + 5]]
    assert not gaps(window), f"frames lost at the manual rollback: {window}"
    status = sub.wait_for(
        topics.status, lambda m: m.json()["model"]["version"] == "1.0.0", timeout=10
    ).json()
    assert status["model"]["name"] == "colors", status["model"]
    assert daemon.stop(timeout=10) == 0
    print(
        f"automatic rollback: command -> rolled_back {auto_s:.2f}s, {lost} frames dropped "
        f"while 2.0.0 failed; manual rollback: command -> rolled_back {manual_s:.2f}s, "
        f"0 frames lost"
    )
