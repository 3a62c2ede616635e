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
from edge_agent.daemon.stats import PipelineStats
from edge_agent.errors import EdgeAgentError
from edge_agent.inference.codec import make_codec
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.supervisor import Supervisor
from edge_agent.publishing.client import MqttPublisher
from edge_agent.publishing.topics import Topics
from edge_agent.tools.bench import procfs
from edge_agent.tools.bench.bare import steady_fps
from edge_agent.tools.bench.sink import PREFIX, Sink

logger = logging.getLogger(__name__)

# Stages reported, in frame order ("capture_read" is the source's read/decode time,
# "capture" the frame's age when the pipeline picks it up, "outside_invoke" each frame's
# end_to_end minus its own invoke: the latency the pipeline adds to the model).
STAGES = ("capture_read", "capture", "preprocess", "transfer", "invoke", "postprocess",
          "publish", "end_to_end", "outside_invoke")  # fmt: skip
SAMPLE_PERIOD = 0.25  # seconds between memory samples
STALL_TIMEOUT = 60.0  # seconds without a completed frame before the run is abandoned


class _Recorder:
    """The pipeline's stats sink: a daemon-like PipelineStats plus every sample kept.

    The samples after the warm-up go into arrays allocated up front, so that the
    percentiles cover the whole run and the benchmark's own book-keeping does not grow
    the process it measures (the memory growth figure).
    """

    def __init__(self, capacity: int):
        self.stats = PipelineStats()  # what the daemon records, same cost
        self.open = False
        # np.full, not np.empty: the pages are touched now, so that filling them during
        # the run does not show as growth of the process being measured.
        self._samples = {name: np.full(capacity, np.nan) for name in STAGES}
        self._counts = dict.fromkeys(STAGES, 0)
        self._invoke: float | None = None

    def record(self, stage: str, ms: float) -> None:
        """Record a latency sample (kept only after the warm-up)."""
        self.stats.record(stage, ms)
        if stage == "invoke":
            # The pipeline thread records a frame's invoke, then its end_to_end.
            self._invoke = ms
        elif stage == "end_to_end" and self._invoke is not None:
            self._keep("outside_invoke", ms - self._invoke)
            self._invoke = None
        self._keep(stage, ms)

    def _keep(self, stage: str, ms: float) -> None:
        """Store a sample after the warm-up, up to the capacity."""
        if self.open and stage in self._samples:
            n = self._counts[stage]
            if n < self._samples[stage].size:
                self._samples[stage][n] = ms
                self._counts[stage] = n + 1

    def incr(self, name: str, n: int = 1) -> None:
        """Count an event."""
        self.stats.incr(name, n)

    def samples(self, stage: str) -> np.ndarray:
        """The kept samples of a stage."""
        return self._samples[stage][: self._counts[stage]]


class _TimedCapture:
    """Wraps a capture to time each ``read()`` (the source's decode cost).

    With ``fps`` it also reports that frame rate, which is what a realtime camera paces
    a file or the synthetic pattern at.
    """

    def __init__(self, cap: Any, stats: _Recorder, fps: float | None = None):
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


class _Tracker:
    """Completion times, the warm-up gate and CPU marks, fed by the pipeline's progress."""

    def __init__(self, frames: int, warmup: int, stats: _Recorder, pids: dict[str, int]):
        self.frames = frames
        self.warmup = warmup
        self.stats = stats
        self.pids = pids  # name -> pid, filled in once the worker runs
        self.done_at = np.full(frames, np.nan)  # touched now (see _Recorder)
        self.count = 0
        self.finished = threading.Event()
        self.cpu: dict[str, tuple[float | None, float | None]] = {}
        self.threads: tuple[dict[str, float], dict[str, float]] = ({}, {})

    def _cpu_now(self) -> dict[str, float | None]:
        """CPU seconds of this process and of the others taking part."""
        now = {"daemon": procfs.cpu_seconds()}
        now.update({name: procfs.cpu_seconds(pid) for name, pid in self.pids.items()})
        return now

    def progress(self) -> None:
        """Pipeline callback, once per completed frame (in the pipeline thread)."""
        i = self.count
        if i < self.frames:
            self.done_at[i] = time.monotonic()
        self.count = i + 1
        if self.count == self.warmup:
            self.stats.open = True
            self.cpu = {k: (v, None) for k, v in self._cpu_now().items()}
            self.threads = (procfs.own_threads_cpu_seconds(), {})
        if self.count == self.frames:
            end = self._cpu_now()
            self.cpu = {k: (v[0], end.get(k)) for k, v in self.cpu.items()}
            self.threads = (self.threads[0], procfs.own_threads_cpu_seconds())
            self.finished.set()

    def thread_ms_per_frame(self) -> dict[str, float]:
        """P2': CPU ms per frame of each of this process's threads between the warm-up
        and the end, ``total`` being the daemon's threads (the harness's main thread,
        which samples memory and waits, is reported apart as ``bench_main``)."""
        before, after = self.threads
        split = procfs.split_ms_per_frame(before, after, self.frames - self.warmup)
        if split:
            split["bench_main"] = split.pop("MainThread", 0.0)
            split["total"] = sum(v for k, v in split.items() if k not in ("total", "bench_main"))
        return split

    def cpu_ms_per_frame(self) -> dict[str, float | None]:
        """CPU milliseconds per frame of each process between the warm-up and the end."""
        n = self.frames - self.warmup
        out: dict[str, float | None] = {}
        for name, (start, end) in self.cpu.items():
            ok = start is not None and end is not None and n > 0
            out[name] = (end - start) * 1000.0 / n if ok else None
        return out


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

    def __init__(self, tracker: _Tracker):
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
    gated = _Recorder(capacity=total + 64)
    pids: dict[str, int] = {}
    if sink.pid:
        pids["broker"] = sink.pid
    tracker = _Tracker(total, warmup, gated, pids)
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
