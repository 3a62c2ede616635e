"""Tier 2: ``camera.decode_scale``, MJPG decoded at reduced scale, on real files and models."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edge_agent.capture.camera import Camera
from edge_agent.capture.mjpeg import ReducedMjpeg, open_reduced
from edge_agent.capture.sources import open_capture, parse_source
from edge_agent.errors import CaptureError
from tests.component.test_inference_real import load
from tests.support.clips import write_clip
from tests.support.paths import REPO, shared_file

CLIP = REPO / "models" / "demo" / "clip.avi"
PHOTOS = ("cat.bmp", "cat_720p.jpg", "grace_hopper.bmp", "pets.jpg")


def frames(cap) -> list[np.ndarray]:
    out = []
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                return out
            out.append(image)
    finally:
        cap.release()


def test_the_demo_clip_at_half_scale_is_every_frame_area_averaged():
    full = frames(open_capture(parse_source(str(CLIP)), name="full"))
    cap = open_reduced(parse_source(str(CLIP)), scale=2, name="half")
    assert isinstance(cap, ReducedMjpeg)
    half = frames(cap)
    assert len(half) == len(full) == 150
    worst = 0.0
    for a, b in zip(full, half):
        assert b.shape == (240, 320, 3)
        ref = cv2.resize(a, (320, 240), interpolation=cv2.INTER_AREA)
        worst = max(worst, float(np.abs(ref.astype(np.int16) - b).mean()))
    assert worst < 3.0, f"mean |difference| to INTER_AREA up to {worst:.2f} grey levels"


def test_rewinding_a_reduced_file_starts_again(tmp_path):
    cap = open_reduced(parse_source(str(CLIP)), scale=4, name="loop")
    first = cap.read()[1]
    for _ in range(10):
        cap.read()
    assert cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    again = cap.read()[1]
    cap.release()
    assert first.shape == (120, 160, 3) and np.array_equal(first, again)


def test_a_codec_that_is_not_mjpg_is_decoded_in_full_with_a_warning(tmp_path, caplog):
    clip = write_clip(tmp_path / "lossless.avi", 5, width=320, height=240, fourcc="FFV1")
    with caplog.at_level(logging.WARNING, logger="edge_agent.capture.mjpeg"):
        cap = open_reduced(parse_source(str(clip)), scale=2, name="porch")
    assert not isinstance(cap, ReducedMjpeg)
    assert frames(cap)[0].shape == (240, 320, 3)
    assert "camera porch: decode_scale 2 needs MJPG, the source is FFV1" in caplog.text


def test_frames_that_are_not_jpeg_are_a_clear_capture_error():
    class Garbage:
        def read(self):
            return True, np.frombuffer(b"not a jpeg at all", np.uint8).reshape(1, -1)

    with pytest.raises(
        CaptureError, match="camera.decode_scale = 1 and camera.motion_gate = false"
    ):
        ReducedMjpeg(Garbage(), 2).read()


def test_a_camera_from_config_delivers_reduced_frames():
    config = SimpleNamespace(name="cam0", source=str(CLIP), loop=False, decode_scale=2)
    camera = Camera.from_config(config, realtime=False)
    camera.start()
    try:
        frame = camera.get(10.0)
        assert frame is not None and frame.image.shape == (240, 320, 3)
    finally:
        assert camera.stop(5.0)


# The shared README's expected outputs for mobilenet_v2 (label, score).
EXPECTED = {"cat.bmp": ("Egyptian cat", 0.777), "grace_hopper.bmp": ("military uniform", 0.934)}


def test_mobilenet_v2_keeps_its_answers_on_photos_decoded_at_half_scale(tmp_path):
    """The photos as 640x480 MJPG frames, decoded in full and at 1/2: the same top-1
    everywhere, and the README's expected outputs within their 0.08 tolerance."""
    paths = [shared_file(f"images/{name}") for name in PHOTOS]
    clip = tmp_path / "photos.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (640, 480))
    for path in paths:
        image = cv2.imread(str(path))
        writer.write(cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA))
    writer.release()
    model = load("mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt", threshold=0.05)
    full = frames(open_capture(parse_source(str(clip)), name="full"))
    half = frames(open_reduced(parse_source(str(clip)), scale=2, name="half"))
    assert len(full) == len(half) == len(PHOTOS)
    moved = []
    for name, a, b in zip(PHOTOS, full, half):
        top_a, top_b = model.infer(a).results[0], model.infer(b).results[0]
        assert top_a.label == top_b.label, (name, top_a, top_b)
        if name in EXPECTED:
            label, score = EXPECTED[name]
            assert top_b.label == label and top_b.score == pytest.approx(score, abs=0.08)
        moved.append(f"{name} {top_a.label} {top_a.score:.3f} -> {top_b.score:.3f}")
    print("decode_scale 2, mobilenet_v2 top-1 (full -> half): " + "; ".join(moved))


def test_a_gated_camera_skips_decoding_still_frames(tmp_path):
    """A still clip (sensor noise, each frame encoded on its own): one full decode, then
    the same frame handed over again; the moving demo clip: every frame decoded."""
    from edge_agent.capture.motion import MotionSettings
    from edge_agent.tools.bench.motion_cost import still_clip

    gate = MotionSettings(enabled=True)
    first = frames(open_capture(parse_source(str(CLIP)), name="full"))
    still = still_clip(first[0], str(tmp_path / "still.avi"), 40)
    cap = open_reduced(parse_source(still), scale=1, name="still", still=gate)
    assert isinstance(cap, ReducedMjpeg)
    delivered = frames(cap)
    assert len(delivered) == 40 and cap.skipped == 39
    assert all(image is delivered[0] for image in delivered)
    assert float(np.abs(delivered[0].astype(np.int16) - first[0]).mean()) < 3.0

    moving = open_reduced(parse_source(str(CLIP)), scale=1, name="moving", still=gate)
    decoded = frames(moving)
    assert moving.skipped == 0 and len(decoded) == len(first)
    # libjpeg and FFmpeg's MJPG decoder round differently: close, not bit-identical.
    assert max(float(np.abs(a.astype(np.int16) - b).mean()) for a, b in zip(first, decoded)) < 3


def test_slow_motion_is_decoded_before_it_adds_up(tmp_path):
    """A square creeping 1 px per frame: each frame alone looks still against the one
    before, but it is compared with the last frame decoded, so decoding resumes."""
    from edge_agent.capture.motion import MotionSettings

    clip = tmp_path / "creep.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (640, 480))
    for x in range(60):
        image = np.full((480, 640, 3), 60, np.uint8)
        image[200:280, 100 + x : 140 + x] = 230
        writer.write(image)
    writer.release()
    cap = open_reduced(
        parse_source(str(clip)), scale=1, name="creep", still=MotionSettings(enabled=True)
    )
    delivered = frames(cap)
    fresh = [i for i in range(1, len(delivered)) if delivered[i] is not delivered[i - 1]]
    assert 0 < cap.skipped < 59 and fresh, cap.skipped
    assert max(b - a for a, b in zip([0, *fresh], [*fresh, 59])) <= 16, fresh
