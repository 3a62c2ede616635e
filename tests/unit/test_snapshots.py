"""Tier 1: snapshot copies, JPEG encoding and the writer's bounded queue."""

from __future__ import annotations

import cv2
import numpy as np

from edge_agent.daemon.snapshots import Snapshot, SnapshotWriter, encode, keep
from edge_agent.publishing.topics import Topics


def frame(w=1280, h=720):
    image = np.zeros((h, w, 3), np.uint8)
    image[200:400, 600:800] = (0, 0, 255)  # a red square
    return image


def test_keep_shrinks_wide_frames_and_scales_the_box_and_owns_its_copy():
    original = frame()
    snap = keep("cam", "red", 1, 0.9, (600.0, 200.0, 800.0, 400.0), original, 640)
    assert snap.image.shape == (360, 640, 3)
    assert snap.box == (300.0, 100.0, 400.0, 200.0)
    original[:] = 0  # the camera reuses its buffer: the snapshot must not change
    assert snap.image[150, 350, 2] > 200
    small = keep("cam", "red", 1, 0.9, (1.0, 2.0, 3.0, 4.0), frame(320, 240), 640)
    assert small.image.shape == (240, 320, 3) and small.box == (1.0, 2.0, 3.0, 4.0)


def test_encode_whole_frame_and_crop():
    snap = Snapshot("cam", "red", 1, 0.9, (600.0, 200.0, 800.0, 400.0), frame())
    whole = cv2.imdecode(np.frombuffer(encode(snap, crop=False, quality=80), np.uint8), 1)
    assert whole.shape == (720, 1280, 3)
    assert whole[300, 700, 2] > 200  # the square, untouched inside the drawn box
    crop = cv2.imdecode(np.frombuffer(encode(snap, crop=True, quality=80), np.uint8), 1)
    assert crop.shape == (300, 300, 3)  # the box and a quarter of it on each side
    assert snap.image[200, 600, 1] == 0  # drawing happened on a copy


def test_every_object_confirmed_at_once_gets_its_snapshot():
    """Six objects confirmed in one frame (a street at start-up): each one's event says it
    has a snapshot, so each label's retained topic must get one. The writer used to keep
    the newest 4 only, dropping the others' for good."""
    sent = []
    writer = SnapshotWriter(Topics("p", "d"), lambda t, j: sent.append(t))
    for i in range(6):
        writer.submit(Snapshot("cam", f"l{i}", i, 0.5, (0, 0, 10, 10), frame(64, 48)))
    writer.start()  # started after: all six wait at once
    writer.stop(5.0)
    assert sent == [f"p/d/cam/l{i}/snapshot" for i in range(6)]
    assert writer.dropped == 0


def test_writer_queue_is_bounded_never_blocks_and_keeps_an_objects_latest():
    sent = []
    writer = SnapshotWriter(Topics("p", "d"), lambda t, j: sent.append((t, j)), depth=2)
    for score in (0.5, 0.6, 0.9):  # one object improving: only its best is encoded
        writer.submit(Snapshot("cam", "a", 1, score, (0, 0, 10, 10), frame(64, 48)))
    for i in range(2, 5):  # past the bound, the oldest waiting object is dropped
        writer.submit(Snapshot("cam", f"l{i}", i, 0.5, (0, 0, 10, 10), frame(64, 48)))
    assert writer.dropped == 2  # "a" and l2
    writer.start()
    writer.stop(5.0)
    assert [t for t, _ in sent] == ["p/d/cam/l3/snapshot", "p/d/cam/l4/snapshot"]
    writer = SnapshotWriter(Topics("p", "d"), lambda t, j: sent.append((t, j)), depth=2)
    for score in (0.5, 0.9):
        writer.submit(Snapshot("cam", "a", 1, score, (0, 0, 10, 10), frame(64, 48)))
    sent.clear()
    writer.start()
    writer.stop(5.0)
    ((topic, jpeg),) = sent
    assert topic == "p/d/cam/a/snapshot" and writer.dropped == 0
    assert jpeg == encode(
        Snapshot("cam", "a", 1, 0.9, (0, 0, 10, 10), frame(64, 48)), crop=False, quality=80
    )


def test_a_crop_of_a_box_on_the_frames_edge_or_under_a_pixel_is_still_a_jpeg():
    """``snapshot_crop``: a small object on the right edge of a 1920 px frame is under a
    pixel wide once shrunk to 640, and a box clipped to the edge has no width: the crop
    was empty, OpenCV refused to encode it and the event's snapshot never went out."""
    tiny = keep("cam", "ball", 1, 0.9, (1919.0, 500.0, 1920.0, 501.0), frame(1920, 1080), 640)
    edge = Snapshot("cam", "edge", 1, 0.9, (640.0, 10.0, 640.0, 50.0), frame(640, 480))
    for snap in (tiny, edge):
        jpeg = encode(snap, crop=True, quality=80)
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1)
        assert image is not None and min(image.shape[:2]) >= 8, image.shape
