"""The frame loop: newest camera frame -> preprocess -> worker -> decode -> publish.

One thread runs it. Two frames are in flight at once: while the worker invokes one,
this thread preprocesses the next into the other shared-memory slot and decodes and
publishes the previous one, so the pipeline runs at the speed of ``invoke()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from edge_agent.capture.frames import QUIET_MAX
from edge_agent.capture.mjpeg import develop
from edge_agent.capture.motion import Check, MotionGate, Verdict
from edge_agent.daemon.liveness import RetryWatch
from edge_agent.errors import CaptureError
from edge_agent.inference.adapters.common import CLASSIFICATION
from edge_agent.inference.geometry import Fit
from edge_agent.inference.postprocess import Result, task_family
from edge_agent.inference.supervisor import Completion, Supervisor
from edge_agent.scheduling import yield_to_worker

logger = logging.getLogger(__name__)

# on_frame(camera, capture time, results, (width, height), is a classifier, frame image)
FrameHook = Callable[[str, float, list[Result], tuple[int, int], bool, Any], None]
# on_idle(camera, wall-clock time now): the camera has no frame with the model
IdleHook = Callable[[str, float], None]
IDLE_CHECK = 0.5  # seconds between on_idle rounds
FRAME_WAIT = 0.25  # a step's wait for a frame with none in flight (beyond frames.QUIET_S)


def is_news(payload: dict[str, Any]) -> bool:
    """Whether a result says something new (a still frame's repeats earlier results)."""
    return payload.get("motion") != Verdict.STILL.value


class Job(NamedTuple):
    """A frame on its way through the worker."""

    camera: str
    frame_id: int
    timestamp: float  # wall clock at capture
    captured: float  # monotonic at capture
    fit: Fit
    submitted: float  # monotonic
    image: Any  # the frame, intact until its results are decoded (the slot holds two)
    motion: Check | None = None  # the motion gate's answer (gated cameras only)


class _Last(NamedTuple):
    """A gated camera's last inferred frame, carried over to its still frames."""

    frame_id: int
    results: list[Result]
    size: tuple[int, int]
    classifier: bool
    payload: dict[str, Any]


class _Still(NamedTuple):
    """A gated camera's frame in which nothing moved, waiting for results to carry."""

    frame: Any  # its image stays held while it waits (the camera is not read meanwhile)
    check: Check
    after: int  # the in-flight frame whose results it carries


class Pipeline:
    """Runs frames from the cameras through the supervisor and publishes the results.

    Args:
        cameras: started camera objects with ``name`` and ``get(timeout) -> Frame | None``.
        supervisor: the started inference supervisor.
        publish_result: called with each result payload (dict); must not block long.
        stats: PipelineStats (``record(stage, ms)``, ``incr(name)``).
        progress: called once per processed frame (the systemd watchdog ping), and
            while every camera is down and retrying (see :mod:`.liveness`).
        results: which frames are published: "all", "detections" (those with results)
            or "off".
        on_generation: called (in this thread) once the supervisor runs another model or
            worker: a switch, a restart, a fallback to another backend.
        on_frame: called (in this thread) with every processed frame's results, those
            without results too (objects are tracked over frames, see daemon.objects).
        on_idle: called (in this thread) about every ``IDLE_CHECK`` s for each camera
            with no frame in flight or waiting, with the wall clock: the object layer
            ends the objects of a camera that stopped giving frames.
        detecting: whether a camera runs detection now; frames of a camera switched
            off are taken and dropped (the watchdog still sees the camera alive).
        motion: the motion gate; a gated camera's frames in which nothing moved skip the
            model and carry its last results over, marked ``"motion": "still"``. A frame
            its camera left compressed (``Frame.deferred``) is decoded only to go to it.
    """

    def __init__(
        self,
        cameras: Sequence[Any],
        supervisor: Supervisor,
        publish_result: Callable[[dict[str, Any]], None],
        stats: Any,
        progress: Callable[[], None] = lambda: None,
        *,
        results: str = "detections",
        on_generation: Callable[[], None] = lambda: None,
        on_frame: FrameHook | None = None,
        on_idle: IdleHook | None = None,
        detecting: Callable[[str], bool] = lambda camera: True,
        motion: MotionGate | None = None,
    ):
        self._cameras = list(cameras)
        self._supervisor = supervisor
        self._publish = publish_result
        self._stats = stats
        self._progress = progress
        self._results = results
        self._on_generation = on_generation
        self._on_frame = on_frame
        self._on_idle = on_idle
        self._retrying = RetryWatch()
        self._next_idle = 0.0  # monotonic time of the next on_idle round
        self._detecting = detecting
        self._motion = motion if motion is not None else MotionGate({})
        self._last: dict[str, _Last] = {}
        self._decoding_seen = 0  # the supervisor's decoding_changes last seen
        self._generation_seen = supervisor.current  # on_generation: once per running model
        self._waiting: dict[str, deque[_Still]] = {}
        self._retry: dict[str, Any] = {}  # still frames whose reference the model dropped
        self._next_camera = 0
        self.frames = 0  # frames processed by the model
        self.skipped = 0  # frames of cameras whose detection is off
        self.still = 0  # frames of gated cameras in which nothing moved
        self.last_frame_at: float | None = None

    def _next_frame(self, timeout: float) -> Any:
        """The newest unseen frame of the next camera that has one (round robin); first
        a still frame whose reference the model dropped, which goes to the model itself."""
        while self._retry:
            _, frame = self._retry.popitem()
            if self._detecting(frame.camera):
                return frame
            self._skip(frame)
        n = len(self._cameras)
        for i in range(n):
            cam = self._cameras[(self._next_camera + i) % n]
            if self._waiting.get(cam.name) or cam.name in self._retry:
                # Its still frame and the frame it waits for are both held: taking
                # another would free the in-flight frame's buffer (see FrameSlot).
                continue
            detecting = self._detecting(cam.name)
            if not detecting and self._inflight(cam.name):
                # Detection just went off: taking (and dropping) its frames would free
                # the buffer of the frame still with the model (see FrameSlot).
                continue
            frame = cam.get(0.0 if n > 1 else timeout)
            if frame is not None and not detecting:
                self._skip(frame)
                continue
            if frame is not None:  # a quiet frame (capture.frames) keeps the camera's turn
                self._next_camera = (self._next_camera + i + (not frame.undecoded)) % n
                return frame
        if n != 1 and timeout > 0:  # no camera enabled: nothing to wait on but time
            time.sleep(min(timeout, 0.005) if n else timeout)
        return None

    def _skip(self, frame: Any) -> None:
        """A frame of a camera whose detection is off: nothing is seen in it, so its
        objects end after their ``max_age``; the camera is alive for the watchdog."""
        self._progress()
        self.skipped += 1
        self._track(frame.camera, frame.timestamp, [], frame.size, False, frame.image)

    def _track(
        self,
        camera: str,
        timestamp: float,
        results: list[Result],
        size: tuple[int, int],
        classifier: bool,
        image: Any,
    ) -> None:
        """Hand a frame's results to the object layer; its failure is counted, never raised."""
        if self._on_frame is None:
            return
        try:
            self._on_frame(camera, timestamp, results, size, classifier, image)
        except Exception:  # objects must never stop detection
            logger.exception("camera %s: object tracking failed on a frame", camera)
            self._stats.incr("errors")

    def step(self) -> int:
        """One round: adopt a switch, submit frames to free slots, collect completions.

        Returns:
            How many frames were completed.
        """
        sup = self._supervisor
        if sup.apply_pending() is not None:
            # The old model's results must not stand for the new one's.
            self._motion.reset()
            self._last.clear()
        if sup.current is not self._generation_seen:
            # A switch, or a worker replaced by a restart or a fallback (whose CPU twin
            # may take another input size): the hook runs once per running model.
            self._generation_seen = sup.current
            self._on_generation()
        if sup.decoding_changes != self._decoding_seen:
            # New thresholds: results carried to still frames were decoded with the old
            # ones, so every gated camera's next frame goes to the model.
            self._decoding_seen = sup.decoding_changes
            self._motion.forget()
        for camera, waiting in self._waiting.items():
            if waiting and not self._inflight(camera):
                # The frame it waited for left the model without results (a model fault
                # dropped it): carrying older results would be wrong, so the still frame
                # (at most one per camera, its image still held) goes to the model.
                self._retry[camera] = waiting.popleft().frame
                waiting.clear()
        stills = 0
        while True:
            if (slot := sup.slot()) is None:
                break
            frame = self._next_frame(0.0 if sup.inflight or stills else FRAME_WAIT)
            if frame is None:
                break
            check = self._gate(frame)
            if check is not None and not check.infer:
                self._still(frame, check)
                # Back to poll after a round of stills (a static scene must not starve the
                # completions); a camera's queued quiet frames (capture.frames) all go.
                stills += 1 / QUIET_MAX if frame.undecoded else 1
                if stills >= len(self._cameras):
                    break
                continue
            if frame.undecoded and (frame := self._develop(frame)) is None:
                continue
            t0 = time.monotonic()
            fit = sup.current.codec.preprocessor(frame.image, slot[1])
            t1 = time.monotonic()
            self._stats.record("capture", (t0 - frame.monotonic) * 1000.0)
            self._stats.record("preprocess", (t1 - t0) * 1000.0)
            job = Job(frame.camera, *frame[1:4], fit, t1, frame.image, check)  # 1:4: id, times
            sup.submit(slot[0], job)
            if check is not None:
                self._motion.inferred(frame.camera, check, frame.monotonic, frame.frame_id)
        completed = sup.poll(0.05 if sup.inflight else 0.0)
        for done in completed:
            self._complete(done)
        self._idle_round()
        if self._retrying.due() and self._retrying.feeds([c.stats() for c in self._cameras]):
            self._progress()  # every camera retrying, or none enabled: see daemon.liveness
        return len(completed)

    def _idle_round(self) -> None:
        """Every ``IDLE_CHECK`` s, ``on_idle`` for each camera with no frame held here (a
        frame with the model or waiting for one carries an older capture time)."""
        now = time.monotonic()
        if self._on_idle is None or now < self._next_idle:
            return
        self._next_idle = now + IDLE_CHECK
        wall = time.time()
        for cam in self._cameras:
            name = cam.name
            if self._waiting.get(name) or name in self._retry or self._inflight(name):
                continue
            try:
                self._on_idle(name, wall)
            except Exception:  # objects must never stop detection
                logger.exception("camera %s: ending its unseen objects failed", name)
                self._stats.incr("errors")

    def _develop(self, frame: Any) -> Any:
        """Decode a frame its camera left compressed (the model is to see it); None,
        counted as an error, when only its preview could be decoded."""
        try:
            return develop(frame)
        except CaptureError as exc:
            logger.warning("camera %s: %s; dropped", frame.camera, exc)
            self._stats.incr("errors")
            return None

    def _gate(self, frame: Any) -> Check | None:
        """The motion gate's answer for a gated camera's frame; None when not gated."""
        if not self._motion.gated(frame.camera):
            return None
        preview = frame.deferred is not None  # the gate reads a deferred frame's preview
        check = self._motion.check(frame.camera, frame.pixels, frame.monotonic, preview=preview)
        if not check.infer and not self._reference_alive(frame.camera):
            # The frame it was compared with left the model without results (a model
            # fault dropped it, or a switch): the last results are older than the scene.
            return check._replace(verdict=Verdict.NO_REFERENCE)
        return check

    def _reference_alive(self, camera: str) -> bool:
        """Whether the gate's reference frame is with the model or gave the last results."""
        ref = self._motion.reference(camera)
        last = self._last.get(camera)
        return (last is not None and last.frame_id == ref) or ref in self._inflight(camera)

    def _inflight(self, camera: str) -> list[int]:
        """The camera's frames with the model, oldest first."""
        return [job.frame_id for job in self._supervisor.inflight_jobs() if job.camera == camera]

    def _still(self, frame: Any, check: Check) -> None:
        """A frame in which nothing moved: it carries the results of the frame the gate
        compared it with, once they are back (frames stay in order)."""
        self._progress()
        inflight = self._inflight(frame.camera)
        still = _Still(frame, check, inflight[-1] if inflight else -1)
        if inflight:
            self._waiting.setdefault(frame.camera, deque()).append(still)
        else:
            self._carry(frame.camera, still)

    def _carry(self, camera: str, still: _Still) -> None:
        """Publish and track a still frame with its camera's last results."""
        self.still += 1
        self._stats.incr("motion_skipped")
        last = self._last[camera]
        if self._results == "all" or (last.results and self._results == "detections"):
            payload = dict(last.payload)
            payload.update(
                timestamp=round(still.frame.timestamp, 3),
                frame_id=still.frame.frame_id,
                inference_ms=0.0,
                motion=still.check.verdict.value,
                inferred_frame_id=last.frame_id,
            )
            self._publish(payload)
        self._track(camera, still.frame.timestamp, last.results, last.size, last.classifier, None)

    def _release(self, camera: str, frame_id: int) -> None:
        """Carry the still frames that waited for this camera's frame ``frame_id``."""
        waiting = self._waiting.get(camera)
        while waiting and waiting[0].after <= frame_id:
            self._carry(camera, waiting.popleft())

    def _complete(self, done: Completion) -> None:
        """Decode, publish and account one finished frame."""
        job: Job = done.job
        t0 = time.monotonic()
        gen = done.model
        results = gen.codec.decoder(done.outputs, job.fit)
        t1 = time.monotonic()
        self._stats.record("invoke", done.invoke_ms)
        self._stats.record("transfer", max(0.0, (t0 - job.submitted) * 1000.0 - done.invoke_ms))
        self._stats.record("postprocess", (t1 - t0) * 1000.0)
        self._stats.incr("frames")
        self.frames += 1
        self.last_frame_at = t1
        publish = self._results == "all" or (results and self._results == "detections")
        classifier = gen.codec.decoder.task == CLASSIFICATION
        size = (job.fit.src_w, job.fit.src_h)
        if publish or job.motion is not None:
            info = gen.worker.info
            payload = {
                "timestamp": round(job.timestamp, 3),
                "frame_id": job.frame_id,
                "camera": job.camera,
                "model": {
                    "name": gen.meta.get("name", ""),
                    "version": gen.meta.get("version", ""),
                    "file": info.model_path,
                },
                "backend": info.backend,
                "task": task_family(gen.codec.decoder.task),
                "inference_ms": round(done.invoke_ms, 3),
                "results": [r.to_json() for r in results],
            }
            if job.motion is not None:
                payload["motion"] = job.motion.verdict.value
                self._last[job.camera] = _Last(job.frame_id, results, size, classifier, payload)
            if publish:
                self._publish(payload)
                self._stats.record("publish", (time.monotonic() - t1) * 1000.0)
        self._track(job.camera, job.timestamp, results, size, classifier, job.image)
        self._stats.record("end_to_end", (time.monotonic() - job.captured) * 1000.0)
        self._progress()
        if job.motion is not None:
            self._release(job.camera, job.frame_id)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; then let the in-flight frames finish."""
        yield_to_worker()  # woken by each result: it must not preempt the worker
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # the loop must survive anything a frame can throw
                logger.exception("pipeline step failed; continuing")
                self._stats.incr("errors")
                stop.wait(0.1)
        deadline = time.monotonic() + 2.0
        while self._supervisor.inflight and time.monotonic() < deadline:
            for done in self._supervisor.poll(0.1):
                self._complete(done)
