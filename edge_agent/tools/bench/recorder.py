"""What a pipeline run is measured with: every stage sample, completion times and the
CPU marks around the measured frames."""

from __future__ import annotations

import threading
import time

import numpy as np

from edge_agent.daemon.stats import PipelineStats
from edge_agent.tools.bench import procfs

# Stages reported, in frame order ("capture_read" is the source's read/decode time,
# "capture" the frame's age when the pipeline picks it up, "outside_invoke" each frame's
# end_to_end minus its own invoke: the latency the pipeline adds to the model).
STAGES = ("capture_read", "capture", "preprocess", "transfer", "invoke", "postprocess",
          "publish", "end_to_end", "outside_invoke")  # fmt: skip
PUBLISHER = "mqtt-publisher"  # the MqttPublisher thread's name


class Recorder:
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


class Tracker:
    """Completion times, the warm-up gate and CPU marks, fed by the pipeline's progress."""

    def __init__(self, frames: int, warmup: int, stats: Recorder, pids: dict[str, int]):
        self.frames = frames
        self.warmup = warmup
        self.stats = stats
        self.pids = pids  # name -> pid, filled in once the worker runs
        self.done_at = np.full(frames, np.nan)  # touched now (see Recorder)
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

    def close(self) -> None:
        """Mark the publisher thread and the broker again, once every result published
        reached the subscriber: a still frame's result waits for the publisher's next
        batch (publishing.waker), so their work for the last frames comes after them.
        It then includes the few frames completed between the last mark and the
        cameras' stop."""
        publisher = procfs.own_threads_cpu_seconds().get(PUBLISHER)
        if PUBLISHER in self.threads[1] and publisher is not None:
            self.threads[1][PUBLISHER] = publisher
        start, end = self.cpu.get("broker", (None, None))
        if end is not None:
            self.cpu["broker"] = (start, procfs.cpu_seconds(self.pids["broker"]))

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
