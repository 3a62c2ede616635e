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


def test_writer_queue_is_bounded_and_never_blocks():
    sent = []
    writer = SnapshotWriter(Topics("p", "d"), lambda t, j: sent.append(t), depth=2)
    snaps = [Snapshot("cam", f"l{i}", i, 0.5, (0, 0, 10, 10), frame(64, 48)) for i in range(5)]
    for snap in snaps:
        writer.submit(snap)  # not started: nothing is consumed
    assert writer.dropped == 3
    writer.start()
    writer.stop(5.0)
    assert sent == ["p/d/cam/l3/snapshot", "p/d/cam/l4/snapshot"]  # the newest two
