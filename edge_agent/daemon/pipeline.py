"""The frame loop: newest camera frame -> preprocess -> worker -> decode -> publish.

One thread runs it. Two frames are in flight at once: while the worker invokes one,
this thread preprocesses the next into the other shared-memory slot and decodes and
publishes the previous one, so the pipeline runs at the speed of ``invoke()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from edge_agent.inference.adapters.common import CLASSIFICATION
from edge_agent.inference.geometry import Fit
from edge_agent.inference.postprocess import Result, task_family
from edge_agent.inference.supervisor import Completion, Supervisor

logger = logging.getLogger(__name__)

# on_frame(camera, capture time, results, (width, height), is a classifier, frame image)
FrameHook = Callable[[str, float, list[Result], tuple[int, int], bool, Any], None]


class Job(NamedTuple):
    """A frame on its way through the worker."""

    camera: str
    frame_id: int
    timestamp: float  # wall clock at capture
    captured: float  # monotonic at capture
    fit: Fit
    submitted: float  # monotonic
    image: Any  # the frame, intact until its results are decoded (the slot holds two)


class Pipeline:
    """Runs frames from the cameras through the supervisor and publishes the results.

    Args:
        cameras: started camera objects with ``name`` and ``get(timeout) -> Frame | None``.
        supervisor: the started inference supervisor.
        publish_result: called with each result payload (dict); must not block long.
        stats: PipelineStats (``record(stage, ms)``, ``incr(name)``).
        progress: called once per processed frame (the systemd watchdog ping).
        results: which frames are published: "all", "detections" (those with results)
            or "off".
        on_generation: called (in this thread) after a model or backend switch.
        on_frame: called (in this thread) with every processed frame's results, those
            without results too (objects are tracked over frames, see daemon.objects).
        detecting: whether a camera runs detection now; frames of a camera switched
            off are taken and dropped (the watchdog still sees the camera alive).
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
        detecting: Callable[[str], bool] = lambda camera: True,
    ):
        self._cameras = list(cameras)
        self._supervisor = supervisor
        self._publish = publish_result
        self._stats = stats
        self._progress = progress
        self._results = results
        self._on_generation = on_generation
        self._on_frame = on_frame
        self._detecting = detecting
        self._next_camera = 0
        self.frames = 0  # frames processed by the model
        self.skipped = 0  # frames of cameras whose detection is off
        self.last_frame_at: float | None = None

    def _next_frame(self, timeout: float) -> Any:
        """The newest unseen frame of the next camera that has one (round robin)."""
        n = len(self._cameras)
        for i in range(n):
            cam = self._cameras[(self._next_camera + i) % n]
            frame = cam.get(0.0 if n > 1 else timeout)
            if frame is not None and not self._detecting(cam.name):
                self._skip(frame)
                continue
            if frame is not None:
                self._next_camera = (self._next_camera + i + 1) % n
                return frame
        if n > 1 and timeout > 0:
            time.sleep(min(timeout, 0.005))
        return None

    def _skip(self, frame: Any) -> None:
        """A frame of a camera whose detection is off: nothing is seen in it, so its
        objects end after their ``max_age``; the camera is alive for the watchdog."""
        self._progress()
        self.skipped += 1
        height, width = frame.image.shape[:2]
        self._track(frame.camera, frame.timestamp, [], (width, height), False, frame.image)

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
            self._on_generation()
        while True:
            slot = sup.slot()
            if slot is None:
                break
            frame = self._next_frame(0.0 if sup.inflight else 0.05)
            if frame is None:
                break
            t0 = time.monotonic()
            fit = sup.current.codec.preprocessor(frame.image, slot[1])
            t1 = time.monotonic()
            self._stats.record("capture", (t0 - frame.monotonic) * 1000.0)
            self._stats.record("preprocess", (t1 - t0) * 1000.0)
            sup.submit(
                slot[0],
                Job(
                    frame.camera,
                    frame.frame_id,
                    frame.timestamp,
                    frame.monotonic,
                    fit,
                    t1,
                    frame.image,
                ),
            )
        completed = sup.poll(0.05 if sup.inflight else 0.0)
        for done in completed:
            self._complete(done)
        return len(completed)

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
        if self._results == "all" or (results and self._results == "detections"):
            info = gen.worker.info
            self._publish(
                {
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
            )
            self._stats.record("publish", (time.monotonic() - t1) * 1000.0)
        classifier = gen.codec.decoder.task == CLASSIFICATION
        size = (job.fit.src_w, job.fit.src_h)
        self._track(job.camera, job.timestamp, results, size, classifier, job.image)
        self._stats.record("end_to_end", (time.monotonic() - job.captured) * 1000.0)
        self._progress()

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; then let the in-flight frames finish."""
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
