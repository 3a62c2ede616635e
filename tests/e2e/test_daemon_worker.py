"""Tier 3: the inference worker aborting mid-invoke, and the Edge TPU coming back.

There is no Edge TPU here: the fake (tests/support/fake_tpu.py) stands in for the
hardware, registered as the ``edgetpu`` backend plugin through the daemon's PYTHONPATH
and steered through a state file the test rewrites while the daemon runs.
``invoke="abort"`` makes the worker process call ``os.abort()`` inside invoke, as
libedgetpu does on a USB transfer error.
"""

from __future__ import annotations

import time

import pytest

from tests.support.broker import wait_until
from tests.support.fake_tpu import write_state
from tests.support.paths import REPO, fixture_model
from tests.support.tpu_plugin import fake_tpu_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DEMO = REPO / "models" / "demo"
REPROBE_INITIAL = 0.5
REPROBE_MAX = 1.0


def results(sub, topics) -> list[dict]:
    """Result payloads received so far."""
    return [m.json() for m in sub.on(topics.results)]


def test_worker_abort_falls_back_to_cpu_then_returns_to_the_tpu(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    state = tmp_path / "tpu.json"
    write_state(state, devices=["usb"], invoke="ok")
    tpu_model = fixture_model("color_uint8_edgetpu.tflite")
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        tpu_model,
        fixture_model("color_labels.txt"),
        env=fake_tpu_env(state),
        inference={"reprobe_initial": REPROBE_INITIAL, "reprobe_max": REPROBE_MAX},
        mqtt={"publish_every_frame": True},
    )
    sub, topics = mqtt_subscriber, daemon.topics
    first = sub.wait_count(topics.results, 10, timeout=30)
    assert {m.json()["backend"] for m in first} == {"edgetpu"}
    assert {m.json()["model"]["file"] for m in first} == {str(tpu_model)}

    write_state(state, devices=["usb"], invoke="abort")
    aborted = time.monotonic()
    cpu = sub.wait_for(topics.results, lambda m: m.json()["backend"] == "cpu", timeout=15).json()
    fallback_s = time.monotonic() - aborted
    assert cpu["model"]["file"] == str(fixture_model("color_uint8.tflite"))
    status = sub.wait_for(
        topics.status, lambda m: m.json()["backend"] == "cpu" and m.json()["last_error"], 10
    ).json()
    assert "SIGABRT" in status["last_error"], status["last_error"]
    stats = sub.wait_for(
        topics.stats, lambda m: m.json()["worker_restarts"] >= 1, timeout=10
    ).json()
    assert stats["backend"] == "cpu"
    # While the TPU still aborts, the daemon stays on the CPU (re-probes fail safely).
    n = len(results(sub, topics))
    sub.wait_count(topics.results, n + 30, timeout=10)
    assert {r["backend"] for r in results(sub, topics)[n:]} == {"cpu"}
    assert daemon.alive()

    write_state(state, devices=["usb"], invoke="ok")
    healed = time.monotonic()
    back = sub.wait_for(
        topics.results,
        lambda m: m.json()["backend"] == "edgetpu" and m.json()["frame_id"] > cpu["frame_id"],
        timeout=REPROBE_MAX * 2 + 10,
    ).json()
    back_s = time.monotonic() - healed
    n = len(results(sub, topics))
    sub.wait_count(topics.results, n + 15, timeout=10)
    assert {r["backend"] for r in results(sub, topics)[n:]} == {"edgetpu"}
    wait_until(lambda: daemon.alive(), 1, "daemon alive")

    all_results = results(sub, topics)
    ids = [r["frame_id"] for r in all_results]
    assert ids == sorted(set(ids)), "frames out of order or duplicated across the restart"
    last_tpu = max(r["frame_id"] for r in all_results if r["frame_id"] < cpu["frame_id"])
    gap = cpu["frame_id"] - last_tpu - 1
    switch_gap = back["frame_id"] - max(i for i in ids if i < back["frame_id"]) - 1
    assert daemon.stop(timeout=10) == 0
    print(
        f"worker abort: first cpu result {fallback_s:.2f}s after the fault, "
        f"{gap} camera frames skipped while the CPU worker started (in-flight frames "
        f"resubmitted); back on edgetpu {back_s:.2f}s after the TPU healed, "
        f"{switch_gap} frames skipped at the switch; worker_restarts "
        f"{stats['worker_restarts']}"
    )
