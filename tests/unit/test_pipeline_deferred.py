"""Tier 1: frames a motion-gated camera left compressed (``capture.frames.Deferred``).

The gate judges each frame's preview; the pipeline decodes a frame only when the model
is to see it. The still frames here carry packets that are not JPEG at all: decoding
one would drop it as an error, so their being carried proves they were never decoded.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import cv2
import numpy as np

from edge_agent.capture.frames import Deferred, Frame
from edge_agent.capture.mjpeg import PREVIEW
from tests.unit.test_pipeline_frames import (
    EMPTY,
    PERSON,
    FakeCamera,
    FakeSupervisor,
    by_id,
    gated_pipeline,
    labels,
)

GARBAGE = np.frombuffer(b"not a jpeg at all", np.uint8)


def deferred(image: np.ndarray, frame_id: int, decodable: bool = True) -> Frame:
    """``image`` as a deferred frame: its JPEG (or garbage) and the JPEG's real preview."""
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].reshape(-1)
    packet = jpeg if decodable else GARBAGE
    preview = cv2.imdecode(jpeg, PREVIEW)
    found = Deferred(packet, cv2.IMREAD_COLOR, preview, (image.shape[1], image.shape[0]))
    return Frame(None, frame_id, 100.0 + frame_id, frame_id / 30, "cam", found)


class DeferredCamera(FakeCamera):
    def __init__(self, frames: list[Frame]):
        super().__init__([])
        self.frames = frames


def counting_stats() -> tuple[SimpleNamespace, Counter]:
    counts: Counter = Counter()
    stats = SimpleNamespace(record=lambda *a: None, incr=lambda n, k=1: counts.update({n: k}))
    return stats, counts


def run(frames: list[Frame]) -> tuple[dict[int, dict], Counter, list]:
    """The frames through a gated pipeline: (published by id, counters, jobs submitted)."""
    published: dict[int, dict] = {}
    supervisor = FakeSupervisor(drop=set())
    submitted: list = []
    submit = supervisor.submit
    supervisor.submit = lambda slot, job: (submitted.append(job), submit(slot, job))
    stats, counts = counting_stats()
    pipeline = gated_pipeline([DeferredCamera(frames)], supervisor, by_id(published), stats=stats)
    for _ in range(2 * len(frames)):
        pipeline.step()
    return published, counts, submitted


def test_still_frames_are_carried_without_being_decoded():
    frames = [deferred(EMPTY, 0), deferred(PERSON, 1)]
    frames += [deferred(PERSON, i, decodable=False) for i in range(2, 6)]
    published, counts, submitted = run(frames)
    assert [job.frame_id for job in submitted] == [0, 1]
    assert labels(published[1]) == ["person"] and published[1]["motion"] == "motion"
    for i in range(2, 6):
        assert published[i]["motion"] == "still" and labels(published[i]) == ["person"], i
    assert counts["errors"] == 0 and counts["motion_skipped"] == 4


def test_the_model_sees_a_moving_frame_decoded_in_full():
    published, _, submitted = run([deferred(EMPTY, 0), deferred(PERSON, 1)])
    images = [job.image for job in submitted]
    assert all(image is not None and image.shape == (480, 640, 3) for image in images)
    assert int(images[1][240, 310, 0]) == 230  # the box, as the JPEG holds it
    assert labels(published[0]) == [] and labels(published[1]) == ["person"]


def test_a_frame_only_whose_preview_decodes_is_dropped_and_counted_not_raised():
    frames = [deferred(EMPTY, 0), deferred(PERSON, 1, decodable=False), deferred(PERSON, 2)]
    published, counts, submitted = run(frames)
    assert [job.frame_id for job in submitted] == [0, 2]
    assert sorted(published) == [0, 2] and counts["errors"] == 1
    assert labels(published[2]) == ["person"] and published[2]["motion"] == "motion"


def test_a_frame_the_camera_decoded_already_is_not_decoded_again():
    decoded = deferred(PERSON, 1, decodable=False)
    decoded = decoded._replace(image=PERSON, deferred=decoded.deferred._replace(image=PERSON))
    published, counts, submitted = run([deferred(EMPTY, 0), decoded])
    assert [job.frame_id for job in submitted] == [0, 1] and submitted[1].image is PERSON
    assert labels(published[1]) == ["person"] and counts["errors"] == 0
