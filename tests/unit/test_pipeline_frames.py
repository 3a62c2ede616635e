"""Tier 1: the pipeline's frame handling around the model (fake supervisor, fake or
real frame slot).

* A frame the last backend cannot run is dropped and counted (a model fault). When that
  frame was a gated camera's reference, the frames compared with it must not carry the
  camera's older results: the next frame goes to the model.
* A still frame waiting for a frame the model dropped goes to the model itself.
* Still frames do not carry results decoded before a threshold change, and only a
  reload that changes the decoding counts as one.
* A still frame of one camera does not keep another camera's frame out of a free slot.
* A frame with the model keeps its image while its camera's detection is switched off.
* A gated camera's queued quiet frames are all taken in one round, even while another
  camera's frames keep the model busy (one a round, the queue outgrew the frame rate).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from edge_agent.capture.frames import Deferred, Frame, FrameSlot
from edge_agent.capture.health import CameraState, CameraStats
from edge_agent.capture.motion import MotionGate, MotionSettings
from edge_agent.daemon.pipeline import Pipeline, is_news
from edge_agent.inference.geometry import plan_fit
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.inference.switching import Completion, DecodeOverride
from tests.unit.test_motion import scene, with_box

EMPTY = scene(3)
PERSON = with_box(EMPTY, 300, 200)


class Person:
    """A decoded result (what the pipeline needs of one)."""

    def to_json(self) -> dict:
        return {"label": "person"}


class Decoder:
    """The fake worker's "outputs" say whether the box is in the frame."""

    task = "detection"
    strict = False  # a raised threshold: the box no longer counts

    def __call__(self, outputs, fit):
        return [Person()] if outputs[0] and not self.strict else []


class FakeSupervisor:
    """Two slots; each poll completes what is in flight, except the frames in ``drop``,
    which leave without results as a model fault's frames do."""

    def __init__(self, drop: set[int]):
        self.drop = drop
        self.hold = False  # the worker is busy: nothing completes
        self.decoding_changes = 0
        self.jobs: list = []
        decoder = Decoder()
        self.current = SimpleNamespace(
            codec=SimpleNamespace(
                preprocessor=lambda image, buf: plan_fit(640, 480, 32, 32, "stretch"),
                decoder=decoder,
            ),
            worker=SimpleNamespace(info=SimpleNamespace(model_path="m.tflite", backend="cpu")),
            meta={},
        )

    @property
    def inflight(self) -> int:
        return len(self.jobs)

    def apply_pending(self):
        return None

    def slot(self):
        return (len(self.jobs), None) if len(self.jobs) < 2 else None

    def submit(self, slot, job):
        self.jobs.append(job)

    def inflight_jobs(self):
        return list(self.jobs)

    def poll(self, timeout):
        if self.hold:
            return []
        jobs, self.jobs = self.jobs, []
        return [
            Completion(job, [bool(job.image[240, 310, 0] == 230)], 1.0, self.current)
            for job in jobs
            if job.frame_id not in self.drop
        ]


STREAMING = CameraStats("cam", "test", CameraState.STREAMING, 0, 0, 0, 30.0, None, 0.0, 0.0)


class FakeCamera:
    """Hands out the given frames, one per ``get``."""

    def __init__(self, images, name="cam"):
        self.name = name
        self.frames = [Frame(im, i, 100.0 + i, i / 30, name) for i, im in enumerate(images)]

    def get(self, timeout):
        return self.frames.pop(0) if self.frames else None

    def stats(self):
        return STREAMING._replace(name=self.name)


STATS = SimpleNamespace(record=lambda *a: None, incr=lambda *a: None)
GATE = MotionSettings(enabled=True, max_idle=60.0)


def gated_pipeline(cameras, supervisor, publish, gated=("cam",), stats=None) -> Pipeline:
    """A pipeline publishing every frame, its ``gated`` cameras behind the motion gate."""
    return Pipeline(
        cameras,
        supervisor,
        publish,
        stats or STATS,
        results="all",
        motion=MotionGate({name: GATE for name in gated}),
    )


def by_id(published: dict[int, dict]):
    """A publish callback keeping each payload under its frame id."""
    return lambda payload: published.__setitem__(payload["frame_id"], payload)


def run(drop: set[int]) -> dict[int, dict]:
    """Frame 0 is empty, then a person stands still for 5 frames; the published results
    by frame id."""
    published: dict[int, dict] = {}
    camera = FakeCamera([EMPTY] + [PERSON] * 5)
    pipeline = gated_pipeline([camera], FakeSupervisor(drop), by_id(published))
    for _ in range(10):
        pipeline.step()
    return published


def labels(payload: dict) -> list[str]:
    return [r["label"] for r in payload["results"]]


def test_still_frames_carry_the_results_of_the_frame_they_were_compared_with():
    published = run(drop=set())
    assert labels(published[1]) == ["person"] and published[1]["motion"] == "motion"
    for i in range(2, 6):
        assert published[i]["motion"] == "still" and published[i]["inferred_frame_id"] == 1
        assert labels(published[i]) == ["person"], i
        assert not is_news(published[i])  # it may wait for the publisher's next batch
    assert is_news(published[1]) and is_news(published[0])  # inferred: sent at once


def test_a_dropped_reference_sends_the_next_frame_to_the_model():
    # Frame 1, where the person appears, is dropped by the model. Frames 2.. look like
    # it, so the gate calls them still; they must not carry frame 0's empty results.
    published = run(drop={1})
    assert 1 not in published
    assert published[2]["motion"] == "no_reference" and "inferred_frame_id" not in published[2]
    for i in range(2, 6):
        assert labels(published[i]) == ["person"], (i, published[i])
    assert all(published[i]["inferred_frame_id"] == 2 for i in range(3, 6))


def test_a_still_camera_does_not_keep_another_cameras_frame_from_the_model():
    published: list[tuple[str, int]] = []
    still, moving = FakeCamera([EMPTY] * 3, "still"), FakeCamera([EMPTY, PERSON, EMPTY], "door")
    supervisor = FakeSupervisor(drop=set())
    pipeline = gated_pipeline(
        [still, moving],
        supervisor,
        lambda payload: published.append((payload["camera"], payload["frame_id"])),
        gated=("still",),
    )
    pipeline.step()  # both cameras' first frames go to the model
    assert sorted(published) == [("door", 0), ("still", 0)]
    published.clear()
    # The still camera's frame skips the model; the other camera's frame takes the free
    # slot in the same round instead of waiting for the next one.
    pipeline.step()
    assert ("still", 1) in published and ("door", 1) in published, published


class SlotCamera:
    """A camera over the real FrameSlot, fed by the test: frames of one grey level."""

    name = "cam"

    def __init__(self):
        self.slot = FrameSlot()
        self.frame_id = 0

    def feed(self, level: int) -> None:
        index, buffer = self.slot.writable()
        image = buffer if buffer is not None else EMPTY.copy()
        image[:] = level  # read into the buffer in place, as a camera does
        self.slot.publish(index, Frame(image, self.frame_id, 100.0 + self.frame_id, 0.0, "cam"))
        self.frame_id += 1

    def get(self, timeout):
        return self.slot.take(timeout)

    def stats(self):
        return STREAMING._replace(name=self.name)


def test_switching_detection_off_keeps_the_in_flight_frame_intact():
    seen: dict[float, int] = {}  # frame timestamp -> its image's grey level when tracked
    detecting = [True]
    camera, supervisor = SlotCamera(), FakeSupervisor(drop=set())
    pipeline = Pipeline(
        [camera],
        supervisor,
        lambda payload: None,
        STATS,
        on_frame=lambda cam, ts, results, size, classifier, image: seen.__setitem__(
            ts, int(image[0, 0, 0])
        ),
        detecting=lambda name: detecting[0],
    )
    supervisor.hold = True  # frame 0 stays with the model
    camera.feed(10)
    pipeline.step()
    assert len(supervisor.jobs) == 1
    detecting[0] = False  # the operator turns detection off meanwhile
    for level in range(11, 16):
        camera.feed(level)
        pipeline.step()
    supervisor.hold = False
    for level in range(16, 18):
        camera.feed(level)
        pipeline.step()
    # Frame 0's results came back with frame 0's own image, not a later frame's.
    assert seen[100.0] == 10
    assert len(seen) > 1  # and frames taken after it were skipped


def test_a_threshold_change_sends_the_next_frame_to_the_model():
    published: dict[int, dict] = {}
    camera, supervisor = FakeCamera([EMPTY] + [PERSON] * 7), FakeSupervisor(drop=set())
    pipeline = gated_pipeline([camera], supervisor, by_id(published))
    for _ in range(10):
        pipeline.step()
        if 2 in published:
            break
    assert labels(published[2]) == ["person"] and published[2]["motion"] == "still"
    before = set(published)
    # SIGHUP raised model.threshold: the supervisor applies it to the decoder.
    supervisor.current.codec.decoder.strict = True
    supervisor.decoding_changes += 1
    for _ in range(10):
        pipeline.step()
    after = sorted(set(published) - before)
    assert after == list(range(max(before) + 1, 8))
    assert published[after[0]]["motion"] == "no_reference"
    assert all(labels(published[i]) == [] for i in after), [published[i] for i in after]


def test_a_still_frame_waiting_for_a_dropped_frame_goes_to_the_model_itself():
    published: dict[int, dict] = {}
    camera, supervisor = FakeCamera([EMPTY] + [PERSON] * 3), FakeSupervisor(drop={1})
    pipeline = gated_pipeline([camera], supervisor, by_id(published))
    supervisor.slot = lambda: (0, None) if not supervisor.jobs else None  # one at a time
    pipeline.step()
    assert list(published) == [0] and labels(published[0]) == []
    supervisor.hold = True
    supervisor.slot = lambda: (len(supervisor.jobs), None) if len(supervisor.jobs) < 2 else None
    pipeline.step()  # frame 1 (the person appears) goes to the model; frame 2 waits for it
    assert [job.frame_id for job in supervisor.jobs] == [1] and 2 not in published
    supervisor.hold = False
    for _ in range(4):
        pipeline.step()  # the model drops frame 1
    assert 1 not in published
    # Frame 2 did not carry frame 0's empty results: it went to the model itself.
    assert published[2]["motion"] == "no_reference" and labels(published[2]) == ["person"]
    assert labels(published[3]) == ["person"] and published[3]["inferred_frame_id"] == 2
    assert sorted(published) == [0, 2, 3]


def test_only_a_reload_that_changes_the_decoding_counts_as_a_change():
    override = DecodeOverride()
    override.set(DecodeSettings(threshold=0.5), ["person"])
    assert override.take_changed() and not override.take_changed()
    override.set(DecodeSettings(threshold=0.5), ["person"])  # e.g. only the log level
    assert not override.take_changed()
    override.set(DecodeSettings(threshold=0.7), ["person"])
    assert override.take_changed()


def test_the_generation_hook_runs_once_per_running_model_restarts_and_fallbacks_too():
    # A restart or a fallback replaces the running worker without a pending switch; a
    # fitted camera must hear of it (a CPU twin may take another input size).
    supervisor = FakeSupervisor(set())
    calls = []
    pipeline = Pipeline(
        [FakeCamera([EMPTY] * 6)],
        supervisor,
        lambda p: None,
        STATS,
        on_generation=lambda: calls.append(supervisor.current),
    )
    for _ in range(3):
        pipeline.step()
    assert calls == []  # the model it started with
    fallback = supervisor.current = SimpleNamespace(**vars(supervisor.current))
    for _ in range(3):
        pipeline.step()
    assert calls == [fallback]


def test_the_idle_hook_skips_a_camera_whose_frame_is_with_the_model():
    """A frame with the model carries an older capture time than now: its camera's
    objects must not be aged past it meanwhile; once it is back, the camera is idle."""
    idle: list[str] = []
    supervisor = FakeSupervisor(drop=set())
    pipeline = Pipeline(
        [FakeCamera([PERSON], "busy"), FakeCamera([], "quiet")],
        supervisor,
        lambda payload: None,
        STATS,
        on_frame=lambda *a: None,
        on_idle=lambda camera, now: idle.append(camera),
    )
    supervisor.hold = True
    pipeline.step()
    assert len(supervisor.jobs) == 1 and idle == ["quiet"]
    supervisor.hold = False
    pipeline._next_idle = 0.0  # the next round is due (rounds are IDLE_CHECK s apart)
    pipeline.step()
    assert idle == ["quiet", "busy", "quiet"]


def test_queued_quiet_frames_are_taken_together_while_another_camera_keeps_the_model_busy():
    published: list[tuple[str, int]] = []
    still, busy = SlotCamera(), FakeCamera([EMPTY] * 10, "busy")
    supervisor = FakeSupervisor(drop=set())
    pipeline = gated_pipeline(
        [still, busy],
        supervisor,
        lambda payload: published.append((payload["camera"], payload["frame_id"])),
    )
    preview = EMPTY[::8, ::8, 1].copy()

    def deferred(frame_id: int, image) -> Frame:
        packet = Deferred(np.zeros(8, np.uint8), 0, preview, (640, 480), image)
        return Frame(image, frame_id, 100.0 + frame_id, frame_id / 30, "cam", packet)

    still.slot.publish(still.slot.writable()[0], deferred(0, EMPTY))  # decoded: the reference
    pipeline.step()
    assert ("cam", 0) in published
    for i in range(1, 9):  # then unchanged: queued, left compressed
        still.slot.publish(still.slot.writable()[0], deferred(i, None), quiet=True)
    published.clear()
    pipeline.step()  # the busy camera's frame takes a slot; every quiet frame is carried
    assert [i for cam, i in published if cam == "cam"] == list(range(1, 9)), published
    assert any(cam == "busy" for cam, _ in published)


def test_with_no_camera_the_loop_waits_and_feeds_the_watchdog():
    # Every camera disabled: each step returned at once, so the pipeline thread spun at
    # 100 % of a core for nothing (and nothing fed the watchdog).
    import threading

    pings, stop = [], threading.Event()

    def ping() -> None:
        pings.append(1)
        if len(pings) >= 2:
            stop.set()

    pipeline = Pipeline([], FakeSupervisor(set()), lambda p: None, STATS, ping)
    steps = 0
    real_step = pipeline.step

    def counted() -> int:
        nonlocal steps
        steps += 1
        return real_step()

    pipeline.step = counted
    thread = threading.Thread(target=pipeline.run, args=(stop,))
    thread.start()
    assert stop.wait(10.0), "no watchdog ping with no camera"
    thread.join(5.0)
    assert not thread.is_alive()
    assert steps <= 20, f"{steps} steps between two pings a second apart: a busy loop"
