"""Tier 2: a motion-gated camera leaves its still MJPG frames compressed, at any scale.

Real files through OpenCV's FFmpeg backend: each frame comes with a 1/8-scale luma
preview for the gate; a frame that moved since the previous one is decoded by the camera,
the others only when the model is to see them, to exactly the pixels the same camera
without the gate delivers at a reduced scale (in full: libjpeg's, about a grey level from
FFmpeg's).
"""

from __future__ import annotations

import functools
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edge_agent.capture import mjpeg
from edge_agent.capture.camera import Camera
from edge_agent.capture.frames import Deferred, Frame
from edge_agent.capture.mjpeg import ReducedMjpeg, develop, jpeg_size, luma_preview, open_reduced
from edge_agent.capture.motion import MotionGate, MotionSettings
from edge_agent.capture.sources import parse_source
from edge_agent.errors import CaptureError
from tests.component.test_decode_scale import CLIP, frames
from tests.support.paths import shared_file

GATE = MotionSettings(enabled=True)
HELD, MOVING = 12, 8


def held_clip(path) -> str:
    """The demo scene held still (sensor noise, each frame its own JPEG), then moving."""
    scene = frames(open_reduced(parse_source(str(CLIP)), scale=1, name="scene"))
    rng = np.random.default_rng(2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (640, 480))
    for image in [scene[0]] * HELD + scene[1 : 1 + MOVING]:
        writer.write(np.clip(image + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8))
    writer.release()
    return str(path)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_only_still_frames_are_left_compressed_and_develop_to_the_ungated_pixels(scale, tmp_path):
    clip = held_clip(tmp_path / "held.avi")
    plain = frames(open_reduced(parse_source(clip), scale=scale, name="plain"))
    found = frames(open_reduced(parse_source(clip), scale=scale, name="gated", motion=GATE))
    assert len(found) == len(plain) == HELD + MOVING
    for i, (image, read) in enumerate(zip(plain, found)):
        assert isinstance(read, Deferred), i
        assert read.size == (image.shape[1], image.shape[0]) == (640 // scale, 480 // scale)
        assert read.preview.shape == (60, 80) and read.preview.dtype == np.uint8
        # The camera decodes the first frame, the one after it (decoded first, as the
        # first counted as moved) and every moving one; still frames wait.
        assert (read.image is None) is (2 <= i < HELD), i
        frame = develop(Frame.captured(read, i, 0.0, "gated"))
        assert frame.image is not None and np.array_equal(frame.image, image), i


def test_at_full_scale_still_frames_are_left_compressed_and_develop_to_libjpegs_pixels(tmp_path):
    """``decode_scale = 1``: the gated camera's frames are libjpeg's decode of each JPEG
    (FFmpeg's decoder gives the ungated camera's: the same picture, about a grey level
    apart), and a still frame is decoded only if the model is to see it."""
    clip = held_clip(tmp_path / "held.avi")
    plain = frames(open_reduced(parse_source(clip), scale=1, name="plain"))
    cap = open_reduced(parse_source(clip), scale=1, name="gated", motion=GATE)
    assert isinstance(cap, ReducedMjpeg)
    found = frames(cap)
    assert len(found) == len(plain) == HELD + MOVING
    for i, (image, read) in enumerate(zip(plain, found)):
        assert isinstance(read, Deferred) and read.size == (640, 480), i
        assert (read.image is None) is (2 <= i < HELD), i
        frame = develop(Frame.captured(read, i, 0.0, "gated"))
        own = cv2.imdecode(read.packet, cv2.IMREAD_COLOR)
        assert np.array_equal(frame.image, own), i
        assert float(cv2.absdiff(frame.image, image).mean()) < 1.0, i


def test_the_preview_is_the_luma_of_each_8x8_block():
    read = open_reduced(parse_source(str(CLIP)), scale=2, name="gated", motion=GATE).read()[1]
    luma = cv2.cvtColor(develop(Frame.captured(read, 0, 0.0, "c")).image, cv2.COLOR_BGR2GRAY)
    blocks = cv2.resize(luma, (80, 60), interpolation=cv2.INTER_AREA)  # 4x4 of the 1/2 frame
    assert np.abs(blocks.astype(int) - read.preview).mean() < 2.0


def test_in_motion_the_preview_comes_from_the_decoded_frame_not_a_second_decode(
    tmp_path, monkeypatch
):
    flags: list[int] = []
    real = mjpeg.decode
    monkeypatch.setattr(
        mjpeg, "decode", lambda packet, flag: flags.append(flag) or real(packet, flag)
    )
    clip = held_clip(tmp_path / "held.avi")
    found = frames(open_reduced(parse_source(clip), scale=2, name="c", motion=GATE))
    assert len(found) == HELD + MOVING
    # A preview pass for the first frame, for the second (decoded first, it found the
    # scene still: it takes the JPEG's own preview), for each still one after it, and
    # for the first moving frame; none while the scene keeps moving.
    assert flags.count(mjpeg.PREVIEW) == 1 + 1 + (HELD - 2) + 1, flags
    assert flags.count(mjpeg.REDUCED[2]) == 2 + MOVING  # decoded by the camera
    assert {read.preview.shape for read in found} == {(60, 80)}


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
@pytest.mark.parametrize("size", [(640, 480), (1600, 900), (641, 479)])
def test_a_preview_taken_from_the_image_is_the_jpeg_preview_within_a_grey_level(scale, size):
    """Also where the frame is no whole number of 8x8 blocks (900 rows: 112.5): the blocks
    of the preview are the JPEG's, not a resize's spread over the frame."""
    photo = cv2.imread(str(shared_file("images/cat_720p.jpg")))
    quality = [cv2.IMWRITE_JPEG_QUALITY, 85]
    packet = cv2.imencode(".jpg", cv2.resize(photo, size), quality)[1]
    derived = luma_preview(cv2.imdecode(packet, mjpeg.FLAGS[scale]), scale)
    from_jpeg = cv2.imdecode(packet, mjpeg.PREVIEW)
    assert derived.shape == from_jpeg.shape == (-(-size[1] // 8), -(-size[0] // 8))
    diff = cv2.absdiff(derived, from_jpeg)
    assert int(diff[:-1, :-1].max()) <= 2
    # A partial edge block decoded at 1/4 is one pixel: its padding is that average.
    assert int(diff.max()) <= 8


@pytest.mark.parametrize(
    ("gated", "scale", "deferred"),
    [(True, 2, True), (True, 1, True), (False, 2, False), (False, 1, False)],
)
def test_a_camera_from_config_defers_only_when_gated(gated, scale, deferred):
    config = SimpleNamespace(
        name="cam0", source=str(CLIP), loop=False, decode_scale=scale, motion_gate=gated
    )
    camera = Camera.from_config(config, realtime=False)
    camera.start()
    try:
        frame = camera.get(10.0)
        assert frame is not None and (frame.deferred is not None) is deferred
        assert frame.size == (640 // scale, 480 // scale)
        assert camera.stats().frame_size == frame.size  # the status names the decoded size
    finally:
        assert camera.stop(5.0)


def jpeg(width: int, height: int, *params: int) -> np.ndarray:
    image = np.random.default_rng(1).integers(0, 255, (height, width, 3), np.uint8)
    return cv2.imencode(".jpg", image, list(params))[1].reshape(-1)


@pytest.mark.parametrize("size", [(641, 481), (643, 479), (17, 9)])
def test_the_decoded_size_is_known_before_decoding_at_every_scale(size):
    packet = jpeg(*size)
    assert jpeg_size(packet) == size
    for scale in (2, 4, 8):
        cap = SimpleNamespace(read=lambda: (True, packet.reshape(1, -1)))
        read = ReducedMjpeg(cap, scale, motion=GATE).read()[1]
        decoded = develop(Frame.captured(read, 0, 0.0, "c")).image
        assert read.size == (decoded.shape[1], decoded.shape[0]), scale


def test_the_size_of_a_progressive_jpeg_and_of_one_with_a_thumbnail_is_its_own():
    assert jpeg_size(jpeg(320, 200, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)) == (320, 200)
    main, thumbnail = bytes(jpeg(320, 200)), bytes(jpeg(16, 8))
    # An APP1 segment carrying a whole 16x8 JPEG (as an EXIF thumbnail does) before the
    # image's own frame header: the size is the image's, not the thumbnail's.
    app1 = b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    packet = np.frombuffer(main[:2] + app1 + main[2:], np.uint8)
    assert jpeg_size(packet) == (320, 200)
    assert cv2.imdecode(packet, cv2.IMREAD_COLOR).shape[:2] == (200, 320)


@pytest.mark.parametrize(
    "data",
    [b"\xff\xd8", b"not a jpeg at all", b"\xff\xd8\xff\xe0\x00", b"\xff\xd8\xff\xda\x00\x02"],
)
def test_a_packet_without_a_frame_header_has_no_size_and_is_not_a_frame(data):
    packet = np.frombuffer(data, np.uint8)
    assert jpeg_size(packet) is None
    cap = SimpleNamespace(read=lambda: (True, packet.reshape(1, -1)))
    with pytest.raises(CaptureError, match="not JPEG images"):
        ReducedMjpeg(cap, 2, live=True, motion=GATE).read()


@pytest.mark.parametrize("extra", [b"\x00\x00", b"\x12", b"\xff\x00", b"\x00\xff\x00\x17"])
def test_bytes_between_segments_are_skipped_as_libjpeg_skips_them(extra):
    """Some cameras put stray bytes between two segments: libjpeg warns ("extraneous
    bytes before marker") and decodes the frame, so the ungated camera delivers it, and
    so must the gated one (it failed every such frame: the camera was lost)."""
    main = bytes(jpeg(64, 48))
    cut = 4 + int.from_bytes(main[4:6], "big")  # after the APP0 segment
    packet = np.frombuffer(main[:cut] + extra + main[cut:], np.uint8)
    assert jpeg_size(packet) == (64, 48)
    cap = SimpleNamespace(read=lambda: (True, packet.reshape(1, -1)))
    plain = ReducedMjpeg(cap, 2, live=True).read()[1]
    read = ReducedMjpeg(cap, 2, live=True, motion=GATE).read()[1]
    assert isinstance(read, Deferred) and read.size == (32, 24)
    assert np.array_equal(develop(Frame.captured(read, 0, 0.0, "c")).image, plain)


def test_a_still_scene_of_saturated_colours_stays_skipped_after_the_first_frames():
    """Red text on white at JPEG quality 50: a preview derived from the decoded frame is
    up to 10 grey levels off the JPEG's own (clipped colours). The camera must not
    compare the two kinds in turn (it kept decoding, and the gate inferring, most frames
    of a scene that never moved: 27 of 40 at motion_pixel_delta 5)."""
    page = np.full((480, 640, 3), 255, np.uint8)
    for y in range(20, 480, 20):
        cv2.putText(page, "The quick brown fox 0123456789", (5, y), 0, 0.5, (0, 0, 255), 1)
    rng = np.random.default_rng(0)
    quality = [cv2.IMWRITE_JPEG_QUALITY, 50]
    noisy = [np.clip(page + rng.normal(0, 1.0, page.shape), 0, 255) for _ in range(40)]
    packets = iter([cv2.imencode(".jpg", im.astype(np.uint8), quality)[1] for im in noisy])
    settings = MotionSettings(enabled=True, pixel_delta=5)
    cap = SimpleNamespace(read=lambda: (True, next(packets).reshape(1, -1)))
    camera, gate = ReducedMjpeg(cap, 2, motion=settings), MotionGate({"c": settings})
    decoded = inferred = 0
    for i in range(40):
        read = camera.read()[1]
        decoded += read.image is not None
        check = gate.check("c", read.preview, i / 15, preview=True)
        if check.infer:  # the model sees it: the gate's new reference
            inferred += 1
            gate.inferred("c", check, i / 15)
    assert decoded <= 3 and inferred <= 3, (decoded, inferred)


def test_a_live_camera_hands_its_still_frames_over_in_batches_and_loses_none(tmp_path):
    """At the clip's 15 fps, as a live camera: the still frames left compressed come to
    the consumer a few at a time (it is woken once the oldest waited QUIET_S), every one
    of them and in order; the first and the moving frames come one by one."""
    camera = Camera(
        "held", held_clip(tmp_path / "held.avi"), loop=False, realtime=True,
        opener=functools.partial(open_reduced, scale=2, motion=GATE),
    )  # fmt: skip
    camera.start()
    taken: list[tuple[int, float, bool]] = []  # frame id, when taken, whether left compressed
    try:
        while (frame := camera.get(5.0)) is not None:
            taken.append((frame.frame_id, time.monotonic(), frame.image is None))
    finally:
        assert camera.stop(5.0)
    assert [i for i, _, _ in taken] == list(range(HELD + MOVING))  # none dropped
    still = [at for _, at, compressed in taken if compressed]
    assert len(still) == HELD - 2  # the two first are decoded (see above)
    # 10 still frames 67 ms apart: one wake-up each would take them 67 ms apart; in
    # batches most are taken within a millisecond of the one before.
    wakes = 1 + sum(b - a > 0.03 for a, b in zip(still, still[1:]))
    assert wakes <= 5, [round(b - a, 3) for a, b in zip(still, still[1:])]
