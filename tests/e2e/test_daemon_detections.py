"""Tier 3: the daemon publishes the right detections for what the camera sees.

The daemon runs as a subprocess on a video file; a real MQTT subscriber on a real
mosquitto reads the results back. Expected boxes come from outside the daemon: the
shared README's reference box for grace_hopper.bmp mapped through the clip writer's own
scale and pan, and the demo clip's per-frame truth file.
"""

from __future__ import annotations

import json

import cv2
import pytest

from tests.support.clips import write_photo_clip
from tests.support.paths import REPO, shared_file

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DEMO = REPO / "models" / "demo"
# /work/shared/README.md: "grace_hopper.bmp: person 0.92 at about [0, 23, 511, 599]".
HOPPER_PERSON = (0.0, 23.0, 511.0, 599.0)
CLIP_SIZE = (512, 600)  # the photo's own aspect ratio (512x600), so the box is not cropped away
CLIP_FRAMES = 8


def iou(a, b) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


def photo_box_in_clip(box, photo_size, index: int) -> tuple[float, ...]:
    """Map a box in photo pixels to clip frame ``index`` of write_photo_clip's pan.

    Repeats write_photo_clip's geometry: the photo is scaled to cover the clip plus a
    margin, and frame i shows the window at (span_x * i // (n - 1), span_y * i // (n - 1)).
    """
    width, height = CLIP_SIZE
    pw, ph = photo_size
    margin = max(8, width // 10)
    scale = max((width + margin) / pw, (height + margin) / ph)
    big_w, big_h = round(pw * scale), round(ph * scale)
    sx, sy = big_w / pw, big_h / ph
    x = (big_w - width) * index // (CLIP_FRAMES - 1)
    y = (big_h - height) * index // (CLIP_FRAMES - 1)
    x0, y0, x1, y1 = box
    return (
        min(max(x0 * sx - x, 0.0), width),
        min(max(y0 * sy - y, 0.0), height),
        min(max(x1 * sx - x, 0.0), width),
        min(max(y1 * sy - y, 0.0), height),
    )


def test_yolov8n_finds_grace_hopper_where_the_reference_says(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    model = shared_file("models/yolov8n_full_integer_quant.tflite")
    labels = shared_file("models/yolov8n_labels.txt")
    photo = shared_file("images/grace_hopper.bmp")
    image = cv2.imread(str(photo))
    photo_size = (image.shape[1], image.shape[0])
    assert photo_size == (512, 600)
    clip = write_photo_clip(tmp_path / "hopper.avi", photo, CLIP_FRAMES, size=CLIP_SIZE, fps=5)
    # device "auto": the _edgetpu twin sits beside the model, but there is no Edge TPU.
    daemon = edge_daemon(mqtt_broker.port, clip, model, labels, model={"threshold": 0.5})

    msgs = mqtt_subscriber.wait_count(daemon.topics.results, 10, timeout=45)
    assert daemon.stop(timeout=10) == 0

    covered = set()
    for msg in msgs:
        result = msg.json()
        assert result["backend"] == "cpu"
        assert result["task"] == "detection"
        assert result["model"]["file"] == str(model)
        assert all(r["score"] >= 0.5 for r in result["results"])
        index = result["frame_id"] % CLIP_FRAMES  # the camera loops: ids run on
        expected = photo_box_in_clip(HOPPER_PERSON, photo_size, index)
        persons = [r for r in result["results"] if r["label"] == "person"]
        assert persons, f"frame {result['frame_id']}: no person in {result['results']}"
        best = max(iou(r["box"], expected) for r in persons)
        assert best >= 0.8, (
            f"frame {result['frame_id']} (clip frame {index}): person boxes "
            f"{[r['box'] for r in persons]} vs expected {[round(v, 1) for v in expected]}: "
            f"IoU {best:.3f}"
        )
        covered.add(index)
    assert len(covered) >= 4, f"only clip frames {sorted(covered)} were checked"


@pytest.mark.parametrize("scale", [1, 2])
def test_demo_model_boxes_follow_the_demo_clip_truth(
    scale, mqtt_broker, mqtt_subscriber, edge_daemon
):
    """In full, and decoded at half scale (``camera.decode_scale``): boxes in its pixels."""
    truth = json.loads((DEMO / "clip_truth.json").read_text())
    frames = truth["frames"]
    assert len(frames) == 150 and truth["fps"] == 15
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        camera={"decode_scale": scale},
    )

    msgs = mqtt_subscriber.wait_count(daemon.topics.results, 45, timeout=30)
    assert daemon.stop(timeout=10) == 0

    worst = 1.0
    for msg in msgs:
        result = msg.json()
        assert result["backend"] == "cpu"
        assert result["model"]["name"] == "color_blobs"
        assert set(result) == {
            "timestamp", "frame_id", "camera", "model", "backend", "task",
            "inference_ms", "results",
        }  # fmt: skip
        assert result["camera"] == "cam0"
        squares = frames[result["frame_id"] % len(frames)]
        labels = sorted(r["label"] for r in result["results"])
        # The README's measurement: one red, one green and one blue per frame, no yellow.
        assert labels == ["blue", "green", "red"], f"frame {result['frame_id']}: {labels}"
        for det in result["results"]:
            square = [v / scale for v in squares[det["label"]]]
            overlap = iou(det["box"], square)
            worst = min(worst, overlap)
            assert overlap >= 0.5, (
                f"frame {result['frame_id']}: {det['label']} box {det['box']} vs truth "
                f"{square}: IoU {overlap:.2f}"
            )
        assert max(r["box"][2] for r in result["results"]) <= 640 / scale
    print(f"demo clip, decode_scale {scale}: {len(msgs)} results checked, worst IoU {worst:.2f}")
