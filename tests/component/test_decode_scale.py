"""Tier 2: ``camera.decode_scale``, MJPG decoded at reduced scale, on real files and models."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edge_agent.capture import mjpeg
from edge_agent.capture.camera import Camera
from edge_agent.capture.frames import Deferred, Frame
from edge_agent.capture.mjpeg import ReducedMjpeg, develop, open_reduced
from edge_agent.capture.sources import open_capture, parse_source
from edge_agent.errors import CaptureError
from tests.component.test_inference_real import load
from tests.support.clips import write_clip, write_mjpg_packets
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


def test_a_gated_camera_over_another_codec_decodes_in_full_without_a_warning(tmp_path, caplog):
    """At ``decode_scale = 1`` only the gate asked for compressed frames: nothing to warn."""
    clip = write_clip(tmp_path / "lossless.avi", 5, width=320, height=240, fourcc="FFV1")
    gate = SimpleNamespace(enabled=True, pixel_delta=25, threshold=0.002)
    with caplog.at_level(logging.WARNING, logger="edge_agent.capture.mjpeg"):
        cap = open_reduced(parse_source(str(clip)), scale=1, name="porch", motion=gate)
    assert not isinstance(cap, ReducedMjpeg)
    assert [f.shape for f in frames(cap)] == [(240, 320, 3)] * 5
    assert caplog.text == ""


def test_a_stream_of_frames_that_are_not_jpeg_is_a_clear_capture_error():
    class Garbage:
        def read(self):
            return True, np.frombuffer(b"not a jpeg at all", np.uint8).reshape(1, -1)

    with pytest.raises(CaptureError, match="set camera.decode_scale = 1$"):
        ReducedMjpeg(Garbage(), 2, live=True).read()
    # A gated camera defers at every scale: turning the gate off is the way out too.
    gate = SimpleNamespace(pixel_delta=25, threshold=0.002)
    with pytest.raises(CaptureError, match="set camera.decode_scale = 1 and camera.motion_gate"):
        ReducedMjpeg(Garbage(), 2, live=True, motion=gate).read()
    with pytest.raises(CaptureError, match="reads: set camera.motion_gate = false$"):
        ReducedMjpeg(Garbage(), 1, live=True, motion=gate).read()


def test_a_file_skips_its_corrupt_frames_to_its_end():
    """Ten bad frames mid-file: skipped (counted), the file then ends; no reopen loop."""
    good = np.frombuffer(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1], np.uint8)
    bad = np.frombuffer(b"not a jpeg at all", np.uint8)
    packets = iter([good] * 5 + [bad] * 10 + [good] * 5)

    class File:
        def read(self):
            packet = next(packets, None)
            return packet is not None, None if packet is None else packet.reshape(1, -1)

    cap = ReducedMjpeg(File(), 2)
    delivered = 0
    while cap.read()[0]:
        delivered += 1
    assert delivered == 10 and cap.bad_frames == 10


def test_exif_orientation_is_ignored_as_ffmpeg_does(tmp_path):
    """imdecode would turn a frame whose JPEG says orientation 6; the camera must not."""
    ok, buf = cv2.imencode(".jpg", np.zeros((240, 320, 3), np.uint8))
    data = bytes(buf)
    # An APP1 Exif segment, big-endian TIFF, one IFD entry: Orientation (0x0112) = 6.
    tiff = b"MM\x00*\x00\x00\x00\x08" + b"\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01"
    tiff += b"\x00\x06\x00\x00" + b"\x00\x00\x00\x00"
    app1 = b"\xff\xe1" + (len(tiff) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + tiff
    rotated = np.frombuffer(data[:2] + app1 + data[2:], np.uint8)
    assert cv2.imdecode(rotated, cv2.IMREAD_REDUCED_COLOR_2).shape[:2] == (160, 120)

    class One:
        def read(self):
            return True, rotated.reshape(1, -1)

    assert ReducedMjpeg(One(), 2).read()[1].shape[:2] == (120, 160)


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


def same_top1(model, frames_by_photo) -> str:
    """Assert, for each ``(photo, a, b)``, the same top-1 on both frames and the README's
    expected output on ``b`` within its 0.08 tolerance; one line of the scores moved."""
    moved = []
    for name, a, b in frames_by_photo:
        top_a, top_b = model.infer(a).results[0], model.infer(b).results[0]
        assert top_a.label == top_b.label, (name, top_a, top_b)
        if name in EXPECTED:
            label, score = EXPECTED[name]
            assert top_b.label == label and top_b.score == pytest.approx(score, abs=0.08)
        moved.append(f"{name} {top_a.label} {top_a.score:.3f} -> {top_b.score:.3f}")
    return "; ".join(moved)


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
    moved = same_top1(model, zip(PHOTOS, full, half))
    print("decode_scale 2, mobilenet_v2 top-1 (full -> half): " + moved)


@pytest.mark.parametrize("scale", [1, 2])
def test_a_frame_without_its_end_marker_is_read_as_ffmpeg_reads_it(scale):
    """Cameras that leave off each frame's EOI marker (FFmpeg: "EOI missing, emulating"):
    a gated camera read none of their frames (OpenCV's reader refuses them), where the
    ungated one, FFmpeg's decoder, reads them all."""
    image = np.zeros((240, 320, 3), np.uint8)
    cv2.circle(image, (160, 120), 60, (40, 200, 90), -1)
    whole = cv2.imencode(".jpg", image)[1].reshape(-1)
    assert whole[-2:].tobytes() == b"\xff\xd9"
    packets = iter([whole[:-2].reshape(1, -1)] * 3)

    class Stream:
        def read(self):
            packet = next(packets, None)
            return packet is not None, packet

    gate = SimpleNamespace(pixel_delta=25, threshold=0.002)
    cap = ReducedMjpeg(Stream(), scale, live=True, motion=gate)
    expected = cv2.imdecode(whole, mjpeg.FLAGS[scale])
    for i in range(3):
        ok, read = cap.read()
        assert ok and isinstance(read, Deferred), i
        assert np.array_equal(develop(Frame.captured(read, i, 0.0, "c")).image, expected), i
    assert cap.bad_frames == 0


def test_an_interlaced_file_is_decoded_in_full_not_as_its_first_fields(tmp_path, caplog):
    """Two JPEG fields a frame (old capture cards): FFmpeg's decoder weaves them into the
    frame; libjpeg would decode the first field alone, a frame of half the height."""
    rng = np.random.default_rng(4)
    frames_in, packets = [], []
    for _ in range(4):
        image = cv2.resize(rng.integers(0, 255, (12, 16, 3), np.uint8), (320, 240))
        frames_in.append(image)
        fields = [cv2.imencode(".jpg", image[row::2])[1].tobytes() for row in (0, 1)]
        packets.append(fields[0] + fields[1])
    clip = write_mjpg_packets(tmp_path / "fields.avi", packets, 320, 240)
    gate = SimpleNamespace(enabled=True, pixel_delta=25, threshold=0.002)
    for scale in (1, 2):
        with caplog.at_level(logging.WARNING, logger="edge_agent.capture.mjpeg"):
            cap = open_reduced(parse_source(str(clip)), scale=scale, name="vhs", motion=gate)
        assert not isinstance(cap, ReducedMjpeg), scale
        got = frames(cap)
        assert [f.shape for f in got] == [(240, 320, 3)] * 4, scale  # every frame, in full
        assert all(float(cv2.absdiff(a, b).mean()) < 8 for a, b in zip(got, frames_in))
    assert caplog.text.count("camera vhs: interlaced MJPG (two fields a frame)") == 2


@pytest.mark.parametrize(("scale", "gated"), [(1, True), (2, False), (2, True)])
def test_a_jpeg_photo_as_the_source_gives_its_frame(scale, gated):
    """A file of one JPEG cannot be rewound: the check for interlaced fields must not
    leave it read."""
    photo = shared_file("images/cat_720p.jpg")
    gate = SimpleNamespace(enabled=gated, pixel_delta=25, threshold=0.002)
    cap = open_reduced(parse_source(str(photo)), scale=scale, name="still", motion=gate)
    assert isinstance(cap, ReducedMjpeg)
    got = frames(cap)
    assert len(got) == 1
    image = got[0] if not gated else develop(Frame.captured(got[0], 0, 0.0, "c")).image
    assert image.shape == (720 // scale, 1280 // scale, 3)
