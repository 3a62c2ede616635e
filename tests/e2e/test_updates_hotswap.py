"""Tier 3: a pushed model release is hot-swapped into the running daemon.

The daemon plays a clip and publishes results; a signed release is announced over MQTT
and fetched from a loopback HTTP server. The daemon validates it in a separate worker,
switches the pipeline between two frames, watches its health, and reports each step
on the retained ``model`` topic. Results must go on with no frame lost at the switch
and carry the new model's name and version from the switch on.
"""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.clips import write_photo_clip
from tests.support.paths import shared_file
from tests.support.updates_e2e import (
    DEMO,
    Operator,
    contiguous_around,
    envelope_of,
    gaps,
    pack_release,
    payloads,
    retained,
    serve_dir,
    states_of,
    updates_config,
    version_of,
    wait_results,
    wait_terminal,
    write_public_key,
)
from tests.support.updates_http import FileServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SPAN = 8  # results checked on each side of a switch


def squash(states: list[str]) -> list[str]:
    """Drop consecutive repeats (several ``downloading`` percent steps count once)."""
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


def check_switch(all_results: list[dict], old: tuple[str, str], new: tuple[str, str]) -> int:
    """Assert the results switch once from ``old`` to ``new`` with no frame lost.

    Returns:
        The index of the first result of the new model.
    """
    versions = [version_of(r) for r in all_results]
    assert new in versions, f"no result from {new}: {sorted(set(versions))}"
    first = versions.index(new)
    before, after = versions[:first], versions[first:]
    assert set(after) == {new}, f"{old} results after the switch to {new}: {sorted(set(after))}"
    assert before[-SPAN:] == [old] * SPAN, f"results before the switch: {before[-SPAN:]}"
    ids = [r["frame_id"] for r in all_results]
    window = ids[first - SPAN : first + SPAN]
    assert len(window) == 2 * SPAN and not gaps(window), (
        f"frame ids around the switch to {new}: {contiguous_around(ids, first, SPAN)}"
    )
    return first


def test_push_hot_swaps_the_demo_model_between_frames(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    key = Ed25519PrivateKey.generate()
    public = write_public_key(key, tmp_path / "release.pub")
    releases = tmp_path / "releases"
    common = {"labels": DEMO / "labels.txt", "task": "detection-ssd"}
    v1 = pack_release(
        releases, key, "demo", "1.0.0", DEMO / "color_blobs.tflite",
        adapter={"threshold": 0.5}, **common,
    )  # fmt: skip
    # 1.1.0: same network, its own adapter settings: at most two detections per frame.
    v2 = pack_release(
        releases, key, "demo", "1.1.0", DEMO / "color_blobs.tflite",
        adapter={"threshold": 0.4, "max_detections": 2}, **common,
    )  # fmt: skip
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        updates=updates_config(public),
    )
    sub, topics = mqtt_subscriber, daemon.topics
    wait_results(sub, topics.results, 15, timeout=30)
    initial = sub.wait_for(topics.model, timeout=10).json()
    assert (initial["state"], initial["name"], initial["reason"]) == ("active", None, "configured")

    timings = []
    old = ("color_blobs", "")
    with FileServer() as server:
        operator = Operator(mqtt_broker.host, mqtt_broker.port)
        try:
            for release, version, detections in ((v1, "1.0.0", 3), (v2, "1.1.0", 2)):
                new = ("demo", version)
                sent = time.monotonic()
                rid = operator.update(topics.base, envelope_of(release), serve_dir(server, release))
                final = wait_terminal(sub, topics.model, rid, timeout=30)
                timings.append(time.monotonic() - sent)
                assert final["state"] == "active", final
                assert (final["name"], final["version"]) == new
                steps = squash([s["state"] for s in states_of(sub, topics.model, rid)])
                assert steps == ["downloading", "verifying", "installing", "active"], steps
                # The health check has seen 10 frames on the new model: keep some more.
                n = len(sub.on(topics.results))
                wait_results(sub, topics.results, 2 * SPAN, after=n, timeout=20)
                results = payloads(sub, topics.results)
                first = check_switch(results, old, new)
                for r in results[first:]:
                    labels = sorted(d["label"] for d in r["results"])
                    assert len(labels) == detections, f"frame {r['frame_id']} on {new}: {labels}"
                    if detections == 3:
                        assert labels == ["blue", "green", "red"], labels
                    assert r["model"]["file"].endswith(f"/models/demo/{version}/color_blobs.tflite")
                old = new
        finally:
            operator.close()

    final = retained(mqtt_broker, topics.model)
    assert (final["state"], final["name"], final["version"]) == ("active", "demo", "1.1.0")
    status = sub.wait_for(
        topics.status, lambda m: m.json()["model"]["version"] == "1.1.0", timeout=10
    ).json()
    assert status["model"]["name"] == "demo" and status["backend"] == "cpu"
    assert daemon.stop(timeout=10) == 0
    shown = ", ".join(f"{t:.2f}" for t in timings)
    print(f"demo hot swaps: command -> active {shown} s; 0 frames lost at each switch")


def test_mobilenet_v1_edgetpu_release_falls_back_to_its_cpu_twin_then_v2_takes_over(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    models = "models/mobilenet_v1_0.25_128_quant"
    v1_tpu = shared_file(f"{models}_edgetpu.tflite")
    v1_cpu = shared_file(f"{models}.tflite")
    v2_cpu = shared_file("models/mobilenet_v2_1.0_224_quant.tflite")
    labels = shared_file("models/imagenet_labels.txt")
    clip = write_photo_clip(
        tmp_path / "cat.avi", shared_file("images/cat.bmp"), 10, size=(320, 240), fps=5
    )
    key = Ed25519PrivateKey.generate()
    public = write_public_key(key, tmp_path / "release.pub")
    releases = tmp_path / "releases"
    common = {"labels": labels, "task": "classification", "adapter": {"top_k": 3}}
    rel1 = pack_release(releases, key, "imagenet", "1.0.0", v1_tpu, cpu_model=v1_cpu, **common)
    rel2 = pack_release(releases, key, "imagenet", "2.0.0", v2_cpu, **common)
    daemon = edge_daemon(
        mqtt_broker.port,
        clip,
        v1_cpu,
        labels,
        model={"threshold": 0.05, "name": "imagenet", "version": "0.1.0"},
        mqtt={"publish_every_frame": True},
        updates=updates_config(public, max_size_mb=8),
    )
    sub, topics = mqtt_subscriber, daemon.topics
    wait_results(sub, topics.results, 3, timeout=30)

    with FileServer() as server:
        operator = Operator(mqtt_broker.host, mqtt_broker.port)
        try:
            rid = operator.update(topics.base, envelope_of(rel1), serve_dir(server, rel1))
            final = wait_terminal(sub, topics.model, rid, timeout=40)
            assert (final["state"], final["version"]) == ("active", "1.0.0"), final
            n = len(sub.on(topics.results))
            on_v1 = wait_results(
                sub, topics.results, 3, after=n, where=lambda r: version_of(r)[1] == "1.0.0"
            )
            # The release's model is the _edgetpu build; with no Edge TPU the CPU twin runs.
            for r in on_v1:
                assert r["backend"] == "cpu"
                assert r["model"]["file"] == str(
                    daemon.dir / "state/models/imagenet/1.0.0" / v1_cpu.name
                )
            rid = operator.update(topics.base, envelope_of(rel2), serve_dir(server, rel2))
            final = wait_terminal(sub, topics.model, rid, timeout=40)
            assert (final["state"], final["version"]) == ("active", "2.0.0"), final
        finally:
            operator.close()
    n = len(sub.on(topics.results))
    on_v2 = wait_results(
        sub, topics.results, 5, after=n, where=lambda r: version_of(r)[1] == "2.0.0", timeout=30
    )
    assert daemon.stop(timeout=10) == 0
    versions = [version_of(r)[1] for r in payloads(sub, topics.results)]
    assert squash(versions) == ["0.1.0", "1.0.0", "2.0.0"], squash(versions)
    cats = [r["results"][0]["label"] for r in on_v2]
    # The shared README: mobilenet_v2 on cat.bmp gives "Egyptian cat" 0.777 (the clip pans
    # over a resized copy, so the top-1 may trade places with "tabby, tabby cat").
    assert all(label in ("Egyptian cat", "tabby, tabby cat", "tiger cat") for label in cats), cats
    assert "Egyptian cat" in cats, cats
    assert all(r["task"] == "classification" and r["backend"] == "cpu" for r in on_v2)
