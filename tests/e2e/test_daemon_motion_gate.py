"""Tier 3: motion gating (``camera.motion_gate``) in the running daemon.

The clip is the demo scene held still for 60 frames (with sensor noise, each frame
encoded on its own), then 30 frames of the squares moving, then held again. It is read
losslessly, every frame published, once with the gate and once without:

* frames in which nothing moved skip the model and carry the last results, marked;
* nothing is lost or reordered, and no detection or event is missed against the run
  without the gate;
* on a looping still scene the watchdog is still fed while the model idles.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support.broker import MqttSubscriber, wait_until
from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DEMO = REPO / "models" / "demo"
HOLD, MOVE = 60, 30


def held_clip(path: Path, hold: int = HOLD, move: int = MOVE) -> list[str]:
    """Write the clip; returns each frame's part ("hold" or "move"), in order."""
    cap = cv2.VideoCapture(str(DEMO / "clip.avi"))
    scene = []
    while len(scene) < move:
        ok, frame = cap.read()
        assert ok
        scene.append(frame)
    cap.release()
    rng = np.random.default_rng(5)
    size = (scene[0].shape[1], scene[0].shape[0])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, size)
    parts = []
    frames = [(scene[0], "hold")] * hold + [(f, "move") for f in scene]
    frames += [(scene[-1], "hold")] * hold
    for image, part in frames:
        noise = rng.normal(0, 2.0, image.shape)  # a real sensor is never perfectly still
        writer.write(np.clip(image + noise, 0, 255).astype(np.uint8))
        parts.append(part)
    writer.release()
    return parts


def run(edge_daemon, broker, clip: Path, frames: int, gate: bool, scale: int = 1, live=False):
    """The daemon over the clip at ``camera.decode_scale = scale``, read losslessly or
    (``live``) at its 15 fps as a camera; (results in arrival order, events, last stats)."""
    daemon = edge_daemon(
        broker.port,
        clip,
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        camera={"loop": False, "realtime": live, "motion_gate": gate, "decode_scale": scale},
        mqtt={"publish_every_frame": True},
    )
    topics = daemon.topics
    sub = MqttSubscriber(broker.host, broker.port, [topics.results, topics.events, topics.stats])
    sub.start()
    try:
        sub.wait_count(topics.results, frames, timeout=60)
        results = [m.json() for m in sub.on(topics.results)]
        skipped = sum(r.get("motion") == "still" for r in results)
        stats = sub.wait_for(
            topics.stats,
            lambda m: m.json()["counters"]["motion_skipped"] == skipped,
            timeout=10,
        )
        assert daemon.stop(timeout=10) == 0
        # Open events end at shutdown: wait for as many ends as news.
        wait_until(
            lambda: (
                Counter(m.json()["type"] for m in sub.on(topics.events))["end"]
                >= Counter(m.json()["type"] for m in sub.on(topics.events))["new"]
            ),
            10,
            "every event ended",
        )
        events = [m.json() for m in sub.on(topics.events)]
    finally:
        sub.stop()
    return results, events, stats.json()


def boxes(result: dict) -> list[tuple[str, tuple[float, ...]]]:
    return sorted((r["label"], tuple(r["box"])) for r in result["results"])


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


@pytest.mark.parametrize(
    ("scale", "live"), [(1, False), (2, False), (2, True)], ids=["full", "deferred-half", "live"]
)
def test_still_frames_skip_the_model_and_miss_nothing(
    mqtt_broker, edge_daemon, tmp_path, scale, live
):
    """At ``decode_scale = 2`` the gated camera leaves its frames compressed and the
    pipeline decodes only those the model sees (capture/mjpeg.py): the same results.
    Read live, the frames left compressed reach the pipeline in batches (capture/
    frames.py, quiet frames) and their results the broker in batches: the same again."""
    clip = tmp_path / "held.avi"
    parts = held_clip(clip)
    gated, gated_events, stats = run(edge_daemon, mqtt_broker, clip, len(parts), True, scale, live)
    plain, plain_events, _ = run(edge_daemon, mqtt_broker, clip, len(parts), False, scale, live)

    # Every frame once, in order.
    ids = [r["frame_id"] for r in gated]
    assert ids == list(range(ids[0], ids[0] + len(parts))), "frames lost or reordered"
    by_id = {r["frame_id"]: r for r in gated}

    # Held frames skip the model; moving ones do not.
    still = [r for r in gated if r["motion"] == "still"]
    held = [r for r, part in zip(gated, parts) if part == "hold"]
    moving = [r for r, part in zip(gated, parts) if part == "move"]
    held_still = sum(r["motion"] == "still" for r in held)
    assert held_still >= 0.9 * len(held), f"{held_still} of {len(held)} held frames skipped"
    assert sum(r["motion"] == "motion" for r in moving) >= len(moving) - 2
    assert stats["counters"]["motion_skipped"] == len(still)
    assert stats["counters"]["frames"] == len(parts) - len(still)

    # A still frame carries exactly the results of the frame the model saw.
    for r in still:
        source = by_id[r["inferred_frame_id"]]
        assert source["motion"] != "still" and source["frame_id"] < r["frame_id"]
        assert r["results"] == source["results"] and r["inference_ms"] == 0.0

    # Against the run without the gate: the same objects in every frame, none missed.
    assert [r["frame_id"] - plain[0]["frame_id"] for r in plain] == list(range(len(parts)))
    worst = 1.0
    for g, p in zip(gated, plain):
        gb, pb = boxes(g), boxes(p)
        assert [label for label, _ in gb] == [label for label, _ in pb], (g, p)
        worst = min([worst] + [iou(a, b) for (_, a), (_, b) in zip(gb, pb)])
    assert worst >= 0.85, f"a carried box is off by IoU {worst:.2f}"
    news = Counter(e["label"] for e in gated_events if e["type"] == "new")
    assert news == Counter(e["label"] for e in plain_events if e["type"] == "new")
    assert sum(news.values()) >= 3
    print(
        f"motion gate: {len(still)}/{len(parts)} frames skipped the model "
        f"({held_still}/{len(held)} held); worst carried-box IoU {worst:.3f}; "
        f"events {dict(news)} with and without the gate"
    )


def test_the_watchdog_is_fed_while_a_still_scene_skips_the_model(
    mqtt_broker,
    mqtt_subscriber,
    edge_daemon,
    tmp_path,
    notify_socket,
):
    clip = tmp_path / "still.avi"
    held_clip(clip, hold=30, move=1)
    daemon = edge_daemon(
        mqtt_broker.port,
        clip,
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        env=notify_socket.env,
        camera={"motion_gate": True, "motion_max_idle": 60.0},
    )
    topics = daemon.topics
    wait_until(lambda: notify_socket.times("READY=1"), 20, "READY=1")
    first = mqtt_subscriber.wait_for(
        topics.stats, lambda m: m.json()["counters"]["motion_skipped"] > 0, timeout=10
    ).json()
    pings_before = len(notify_socket.times("WATCHDOG=1"))
    later = mqtt_subscriber.wait_for(
        topics.stats,
        lambda m: (
            m.json()["counters"]["motion_skipped"] >= first["counters"]["motion_skipped"] + 45
        ),
        timeout=15,
    ).json()
    pings = len(notify_socket.times("WATCHDOG=1")) - pings_before
    inferred = later["counters"]["frames"] - first["counters"]["frames"]
    # 3 s of a 15 fps still scene: the model saw at most one frame per loop of the clip
    # (its first frame follows the last), yet the watchdog was pinged throughout.
    assert inferred <= 3, f"{inferred} frames went to the model in a still scene"
    assert pings >= 4, f"{pings} watchdog pings while the scene was still"
    assert daemon.alive()
    assert daemon.stop(timeout=10) == 0
