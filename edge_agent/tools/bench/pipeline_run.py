"""The daemon's frame path, measured: camera -> Pipeline -> Supervisor -> MqttPublisher.

The parts are the daemon's own (``Camera``, ``Supervisor`` with ``make_codec``,
``Pipeline`` in its own thread, ``MqttPublisher``), wired as ``Daemon.start`` wires
them. The camera reads a file or the synthetic pattern losslessly as fast as it is
consumed (``realtime=False``), so the pipeline, not the source's frame rate, sets the
pace; every frame is published (``results="all"``) and counted at the subscriber.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from typing import Any

import cv2
import numpy as np

from edge_agent.capture.camera import Camera
from edge_agent.capture.mjpeg import open_reduced
from edge_agent.capture.motion import MotionGate, MotionSettings
from edge_agent.daemon.pipeline import Pipeline, is_news
from edge_agent.errors import EdgeAgentError
from edge_agent.inference.codec import make_codec
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.supervisor import Supervisor
from edge_agent.publishing.client import MqttPublisher
from edge_agent.publishing.topics import Topics
from edge_agent.tools.bench import procfs
from edge_agent.tools.bench.bare import steady_fps
from edge_agent.tools.bench.recorder import STAGES, Recorder, Tracker
from edge_agent.tools.bench.sink import PREFIX, Sink

logger = logging.getLogger(__name__)

SAMPLE_PERIOD = 0.25  # seconds between memory samples
STALL_TIMEOUT = 60.0  # seconds without a completed frame before the run is abandoned


class _TimedCapture:
    """Wraps a capture to time each ``read()`` (the source's decode cost).

    With ``fps`` it also reports that frame rate, which is what a realtime camera paces
    a file or the synthetic pattern at.
    """

    def __init__(self, cap: Any, stats: Recorder, fps: float | None = None):
        self._cap = cap
        self._stats = stats
        self._fps = fps

    def read(self, image: np.ndarray | None = None) -> tuple[bool, Any]:
        """Read and record the time it took."""
        t0 = time.perf_counter()
        result = self._cap.read(image) if image is not None else self._cap.read()
        self._stats.record("capture_read", (time.perf_counter() - t0) * 1000.0)
        return result

    def get(self, prop: int) -> float:
        """The capture's property; the chosen rate for CAP_PROP_FPS."""
        if prop == cv2.CAP_PROP_FPS and self._fps:
            return float(self._fps)
        return self._cap.get(prop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cap, name)


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    """p50, p99 and mean of samples (None when empty)."""
    if values.size == 0:
        return {"p50": None, "p99": None, "mean": None}
    p50, p99 = np.percentile(values, (50, 99))
    return {"p50": float(p50), "p99": float(p99), "mean": float(values.mean())}


class _MemorySampler:
    """RSS samples of the daemon, forkserver and worker, taken from the main thread.

    Samples go into an array allocated up front (the last row is overwritten once it
    is full), so sampling does not itself grow the daemon process.
    """

    NAMES = ("daemon", "forkserver", "worker", "resource_tracker")
    CAPACITY = 4096  # 17 minutes at SAMPLE_PERIOD

    def __init__(self, tracker: Tracker):
        self.tracker = tracker
        self._rows = np.full((self.CAPACITY, 1 + len(self.NAMES)), np.nan)
        self._n = 0
        self.last: dict[str, procfs.Memory | None] = {}

    def sample(self, pids: dict[str, int | None], *, pss: bool = False) -> None:
        """One sample, tagged with the frames completed so far."""
        mem = {name: procfs.memory(pids[name], pss=pss) if pids.get(name) else None
               for name in self.NAMES}  # fmt: skip
        row = min(self._n, self.CAPACITY - 1)
        self._rows[row, 0] = self.tracker.count
        for i, name in enumerate(self.NAMES):
            self._rows[row, 1 + i] = mem[name].rss if mem[name] else np.nan
        self._n = row + 1
        self.last = mem

    def summary(self, warm_count: int) -> dict[str, Any]:
        """Peak (kernel high-water mark), steady (median of the second half) and growth.

        ``total`` is the daemon and its worker; ``all`` adds the multiprocessing helpers
        (the forkserver that forks workers, the resource tracker). Growth is that of
        ``total`` from the first sample after the warm-up to the last one.
        """
        rows = self._rows[: self._n]
        if rows.size == 0:
            return {}
        second_half = rows[rows[:, 0] >= self.tracker.frames // 2]
        out: dict[str, Any] = {}
        for i, name in enumerate(self.NAMES):
            mem = self.last.get(name)
            steady = second_half[:, 1 + i]
            steady = steady[~np.isnan(steady)]
            out[name] = {
                "peak_mb": mem.peak if mem else None,
                "steady_mb": float(np.median(steady)) if steady.size else None,
                "pss_mb": mem.pss if mem else None,
            }
        for key, names in (("total", ("daemon", "worker")), ("all", self.NAMES)):
            out[key] = {
                q: sum(out[n][q] or 0.0 for n in names) for q in ("peak_mb", "steady_mb", "pss_mb")
            }
        warm = rows[rows[:, 0] >= warm_count]
        if len(warm) >= 2:
            totals = np.nansum(warm[:, [1, 3]], axis=1)  # daemon + worker
            out["growth_mb"] = float(totals[-1] - totals[0])
            out["growth_frames"] = int(warm[-1, 0] - warm[0, 0])
        else:
            out["growth_mb"], out["growth_frames"] = None, 0
        return out


def run_pipeline(
    options: ModelOptions,
    source: str,
    frames: int,
    warmup: int,
    sink: Sink,
    device: str,
    pace: float | None = None,
    cameras: int = 1,
    motion: bool = False,
    decode_scale: int = 1,
) -> dict[str, Any]:
    """Run ``frames`` frames (after ``warmup`` more) through the daemon's pipeline.

    Saturated (``pace`` None), the camera reads losslessly as fast as frames are
    consumed: that gives throughput and CPU per frame, and latencies that include the
    queueing of a saturated pipeline (a frame waiting for a slot, then for the frame
    ahead of it). Paced, the camera delivers ``pace`` frames per second as a live
    camera does (dropping when the pipeline falls behind): that gives the latency a
    frame sees in normal operation.

    Args:
        options: the model.
        source: camera source (file path or synthetic spec).
        frames: frames measured, warm-up included in the count of completed ones.
        warmup: completed frames left out of every figure.
        sink: the started broker + subscriber.
        device: the device id of this run (its results topic).
        pace: frames per second of a realtime source, or None for saturated.
        cameras: cameras reading the source at once (``bench``, ``bench-2``, ...).
        motion: the cameras are motion-gated (default settings, see capture/motion.py).
        decode_scale: MJPG decoded at 1/N scale (``camera.decode_scale``).

    Returns:
        The round's figures (see the keys).

    Raises:
        EdgeAgentError: the model, camera or broker failed, or the pipeline stalled.
    """
    total = warmup + frames
    gated = Recorder(capacity=total + 64)
    pids: dict[str, int] = {}
    if sink.pid:
        pids["broker"] = sink.pid
    tracker = Tracker(total, warmup, gated, pids)
    sampler = _MemorySampler(tracker)
    published = [0]
    t_setup, wall_setup = time.monotonic(), time.time()
    loaded = None
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as spool:
        publisher = MqttPublisher(
            sink.settings(f"edge-agent-{device}"),
            Topics(PREFIX, device),
            os.path.join(spool, "spool"),
        )
        supervisor = thread = None
        cams: list[Camera] = []
        stop = threading.Event()
        delivered, ran = 0, False
        try:
            publisher.start()
            supervisor = Supervisor(
                options, make_codec, meta={"name": os.path.basename(options.path)}
            )
            supervisor.start()
            loaded = time.monotonic() - t_setup
            worker_pid = supervisor.current.worker.pid
            process_pids = {
                **procfs.daemon_processes(os.getpid()),
                # This process's forkserver also forks the bench's sink: pick by pid.
                "forkserver": procfs.parent_pid(worker_pid),
                "worker": worker_pid,
            }
            pids["worker"] = worker_pid

            def opener(*args: Any, **kwargs: Any) -> _TimedCapture:
                gate = MotionSettings(enabled=motion)
                cap = open_reduced(*args, scale=decode_scale, motion=gate, **kwargs)
                return _TimedCapture(cap, gated, pace)

            names = ["bench"] + [f"bench-{i}" for i in range(2, cameras + 1)]
            cams = [
                Camera(n, source, loop=True, realtime=pace is not None, opener=opener)
                for n in names
            ]
            for camera in cams:
                camera.start()

            def publish(payload: dict[str, Any]) -> None:
                publisher.publish_result(payload, urgent=is_news(payload))  # as the daemon
                published[0] += 1

            gate = MotionGate({n: MotionSettings(enabled=True) for n in names} if motion else {})
            pipeline = Pipeline(
                cams, supervisor, publish, gated, tracker.progress, results="all", motion=gate
            )
            thread = threading.Thread(
                target=pipeline.run, args=(stop,), name="pipeline", daemon=True
            )
            thread.start()
            last_count, last_change = -1, time.monotonic()
            while not tracker.finished.wait(SAMPLE_PERIOD):
                sampler.sample(process_pids)
                if tracker.count != last_count:
                    last_count, last_change = tracker.count, time.monotonic()
                elif time.monotonic() - last_change > STALL_TIMEOUT:
                    cam = cams[0].stats()
                    raise EdgeAgentError(
                        f"model {options.path}: pipeline stalled after {tracker.count} frames "
                        f"(camera {cam.state}: {cam.last_error or 'no error'}; "
                        f"worker: {supervisor.last_error or 'no error'})"
                    )
            sampler.sample(process_pids, pss=True)
            ran = True
        finally:
            for camera in cams:
                camera.stop(2.0)
            stop.set()
            if thread is not None:
                thread.join(5.0)
            if ran:  # the in-flight frames are published now: wait for all to arrive
                delivered = sink.wait_count(device, published[0], 30.0)
                tracker.close()
            publisher.stop(5.0)
            if supervisor is not None:
                supervisor.stop(3.0)
    first = sink.first(device)
    arrivals = sink.collect(device)
    snap = gated.stats.snapshot()
    stages = {name: _percentiles(gated.samples(name)) for name in STAGES}
    late = np.array([(a - c) * 1000.0 for a, c, _ in arrivals[warmup:]], np.float64)
    dropped = sum(c.stats().dropped for c in cams)
    return {
        "fps": steady_fps(tracker.done_at, warmup),
        "frames": tracker.count,
        "published": published[0],
        "delivered": delivered,
        "duplicates": len(arrivals) - len({f for _, _, f in arrivals}),
        "dropped": dropped,
        "worker_restarts": supervisor.restarts,
        "errors": snap["counters"].get("errors", 0) + supervisor.errors,
        "motion_skipped": snap["counters"].get("motion_skipped", 0),
        "stages": stages,
        "delivered_ms": _percentiles(late),
        "startup_s": (first - wall_setup) if first is not None else None,
        "worker_ready_s": loaded,
        "cpu_ms_per_frame": tracker.cpu_ms_per_frame(),
        "thread_ms_per_frame": tracker.thread_ms_per_frame(),
        "memory": sampler.summary(warmup),
    }
