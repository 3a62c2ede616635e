"""Orchestrates a benchmark: rounds of bare loop and pipeline, then the daemon cold start.

Machines running this are often shared and always noisy, so the bare loop and the
pipeline are interleaved (bare, pipeline, bare, pipeline, ...) and every figure is the
median over the rounds; each round's own figures are kept in the report as well.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge_agent.capture.sources import open_capture, parse_source
from edge_agent.errors import CaptureError, ConfigError
from edge_agent.inference.model import ModelOptions
from edge_agent.tools.bench.bare import run_bare
from edge_agent.tools.bench.coldstart import daemon_start
from edge_agent.tools.bench.cpu_split import p2_prime_target, thread_split
from edge_agent.tools.bench.decode_cost import decode_summary
from edge_agent.tools.bench.motion_cost import measure_motion, motion_target
from edge_agent.tools.bench.naive import naive_summary, run_naive
from edge_agent.tools.bench.objects_cost import measure_objects, objects_target
from edge_agent.tools.bench.pipeline_run import run_pipeline
from edge_agent.tools.bench.report import summarize
from edge_agent.tools.bench.simtpu import install_plugin, p9_target
from edge_agent.tools.bench.sink import Sink
from edge_agent.tools.bench.worker_loop import worker_loop, worker_summary

logger = logging.getLogger(__name__)

SYNTHETIC = "synthetic:640x480"
REPO = Path(__file__).resolve().parents[3]
# (model, labels) under the shared data folder, then the bundled demo and fixture.
SHARED_MODELS = (
    ("mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt"),
    ("yolov8n_full_integer_quant.tflite", "yolov8n_labels.txt"),
)
BUNDLED_MODELS = (
    ("models/demo/color_blobs.tflite", "models/demo/labels.txt"),
    ("tests/fixtures/models/color_uint8.tflite", "tests/fixtures/models/color_labels.txt"),
)


MAX_FRAMES = 1_000_000  # per round and loop: hours of a real camera
MAX_ROUNDS = 100
MAX_SIM_MS = 1000.0  # a simulated invoke of more than a second stands in for no accelerator


class BenchOptions(NamedTuple):
    """What to measure.

    Attributes:
        model, labels: the model and its label file ("" for none).
        source: a video file, ``synthetic`` (640x480) or a ``synthetic:WxH`` spec.
        frames: frames measured per round (after the warm-up).
        warmup: frames run first in every loop and left out of every figure (>= 1).
        rounds: interleaved bare/pipeline rounds; figures are medians over them.
        threads: interpreter threads for both loops (0: all cores, as the daemon).
        device: auto, cpu, usb[:N] or pci[:N].
        broker: ``(host, port)`` of a broker, None for an embedded amqtt one.
        cold_starts: times ``edge-agent run`` is started for the start-up figure (0: none).
        pace_fps: rate of the paced (live-camera-like) run that gives the latencies.
        pace_frames: frames of the paced run per round (0: no paced run).
        objects: objects in the object layer's cost run (P12; 0: skip it).
        sim_tpu_ms: > 0: the model runs on the simulated Edge TPU (P9), this long per
            invoke, in the real worker process; 0: on the device given.
        cameras: cameras reading the source at once in the pipeline runs.
        motion: also measure motion gating (P10, see bench/motion_cost.py).
        decode_scale: > 1: also run the pipeline with MJPG decoded at 1/N scale.
    """

    model: str
    labels: str = ""
    source: str = "synthetic"
    frames: int = 300
    warmup: int = 10
    rounds: int = 3
    threads: int = 0
    device: str = "auto"
    broker: tuple[str, int] | None = None
    cold_starts: int = 1
    pace_fps: float = 30.0
    pace_frames: int = 150
    objects: int = 20
    sim_tpu_ms: float = 0.0
    cameras: int = 1
    motion: bool = False
    decode_scale: int = 1


def default_models(shared: str | None = None) -> list[tuple[str, str]]:
    """The models ``--all`` measures: the shared real models, else the bundled ones.

    Args:
        shared: the shared data folder (default ``$EDGE_AGENT_SHARED`` or ``../shared``).

    Returns:
        ``(model, labels)`` pairs that exist.
    """
    root = Path(shared or os.environ.get("EDGE_AGENT_SHARED", "../shared")) / "models"
    found = [
        (str(root / m), str(root / lab) if (root / lab).is_file() else "")
        for m, lab in SHARED_MODELS
        if (root / m).is_file()
    ]
    if found:
        return found
    return [
        (str(REPO / m), str(REPO / lab) if (REPO / lab).is_file() else "")
        for m, lab in BUNDLED_MODELS
        if (REPO / m).is_file()
    ][:1]


def resolve_source(source: str) -> str:
    """``synthetic`` means the 640x480 pattern; anything else is a camera source.

    Raises:
        ConfigError: an unusable source (a live camera: its rate would set the pace).
    """
    if source.strip().lower() == "synthetic":
        return SYNTHETIC
    spec = parse_source(source)
    if not spec.paced:
        raise ConfigError(
            f"bench source {spec.display!r} is live: use a video file or synthetic:WxH, "
            "which are read as fast as the pipeline consumes them"
        )
    return source


def first_frame(source: str) -> np.ndarray:
    """The first frame of a source (the bare loop's input).

    Raises:
        CaptureError: the source cannot be opened or read.
    """
    cap = open_capture(parse_source(source), name="bench")
    try:
        ok, image = cap.read()
    finally:
        cap.release()
    if not ok or image is None:
        raise CaptureError(f"{source}: no frame could be read")
    return image


def run_bench(
    opts: BenchOptions, on_round: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """Measure one model: interleaved rounds, then the daemon's cold start.

    Args:
        opts: what to measure.
        on_round: receives a one-line progress message after each phase.

    Returns:
        The report (see :func:`edge_agent.tools.bench.report.summarize`).

    Raises:
        EdgeAgentError: the model, source or broker is unusable, or a loop failed.
    """
    # Upper bounds too: a mistyped --frames 1e9 would allocate per-frame arrays of that
    # size (a MemoryError traceback) or run for days; nan must not reach a sleep.
    if not (1 <= opts.cameras <= 16 and 0 <= opts.sim_tpu_ms <= MAX_SIM_MS):
        raise ConfigError(
            f"bench needs 1..16 cameras and a simulated invoke time of 0..{MAX_SIM_MS:g} ms"
        )
    counts = (opts.frames, opts.warmup, opts.pace_frames, opts.objects, opts.cold_starts)
    least = opts.frames >= 2 and opts.warmup >= 1 and 1 <= opts.rounds <= MAX_ROUNDS
    if not least or not all(0 <= n <= MAX_FRAMES for n in counts):
        raise ConfigError(
            f"bench needs frames >= 2, warmup >= 1, rounds 1..{MAX_ROUNDS}, and frames, "
            f"warmup, pace frames, objects and cold starts of at most {MAX_FRAMES}"
        )
    if opts.pace_frames and not 0 < opts.pace_fps <= 1000:
        raise ConfigError(f"bench pace must be in (0, 1000] fps, got {opts.pace_fps:g}")
    if not os.path.isfile(opts.model):
        raise ConfigError(f"{opts.model}: no such model file")
    source = resolve_source(opts.source)
    image = first_frame(source)
    device = opts.device
    if opts.sim_tpu_ms > 0:  # before the sink starts the forkserver: it must see the plugin
        install_plugin(Path(tempfile.mkdtemp(prefix="edge-agent-simtpu-")), opts.sim_tpu_ms)
        device = "usb"
    options = ModelOptions(
        path=opts.model, labels=opts.labels, device=device, num_threads=opts.threads
    )
    tag = f"{os.getpid()}"
    sink = Sink(opts.broker)
    sink.start()
    rounds: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []
    try:
        for r in range(opts.rounds):
            # Pipeline first in round 1: its start-up is then the coldest (fresh forkserver).
            pipe = run_pipeline(options, source, opts.frames, opts.warmup, sink,
                                f"bench-{tag}-{r}", cameras=opts.cameras)  # fmt: skip
            on_round(f"round {r + 1}: pipeline {pipe['fps']:.1f} fps")
            entry = {"pipeline": pipe}
            if opts.decode_scale > 1:
                entry["reduced"] = run_pipeline(options, source, opts.frames, opts.warmup, sink,
                                                f"bench-{tag}-{r}-reduced", cameras=opts.cameras,
                                                decode_scale=opts.decode_scale)  # fmt: skip
                on_round(f"round {r + 1}: decode_scale {opts.decode_scale} "
                         f"{entry['reduced']['fps']:.1f} fps")  # fmt: skip
            bare = run_bare(options, image, opts.frames, opts.warmup, timeout=600.0)
            on_round(f"round {r + 1}: bare invoke {bare['fps']:.1f} fps")
            entry["worker"] = worker_loop(options, image, opts.frames, opts.warmup, timeout=600.0)
            on_round(f"round {r + 1}: worker alone {entry['worker']['fps']:.1f} fps")
            naive = run_naive(options, source, opts.frames, opts.warmup, (sink.host, sink.port),
                              f"bench-{tag}-{r}-naive", timeout=600.0)  # fmt: skip
            on_round(f"round {r + 1}: naive loop {naive['fps']:.1f} fps")
            entry.update(bare=bare, naive=naive)
            if opts.pace_frames > 0:
                entry["paced"] = run_pipeline(
                    options,
                    source,
                    opts.pace_frames,
                    opts.warmup,
                    sink,
                    f"bench-{tag}-{r}-paced",
                    pace=opts.pace_fps,
                    cameras=opts.cameras,
                )
                e2e = entry["paced"]["stages"]["end_to_end"]["p99"] or 0.0
                on_round(f"round {r + 1}: at {opts.pace_fps:g} fps, end-to-end p99 {e2e:.1f} ms")
            rounds.append(entry)
        for i in range(opts.cold_starts):
            starts.append(daemon_start(options, source, sink, f"bench-{tag}-run{i}"))
            start = starts[-1]
            on_round(f"edge-agent run: first result after {start['first_result_s']:.2f} s")
            for line in start["warnings"]:  # shown, since they may explain the figure
                on_round(f"  edge-agent run logged: {line}")
        if opts.motion:
            motion = measure_motion(options, source, image, opts.frames, opts.warmup, sink,
                                    f"bench-{tag}-motion", opts.rounds, on_round,
                                    opts.decode_scale, opts.pace_fps)  # fmt: skip
        broker = sink.description
    finally:
        sink.stop()
    report = summarize(opts, source, image.shape, broker, rounds, starts)
    report["cameras"] = opts.cameras
    report["naive"] = naive_summary(rounds)
    report["worker_loop"] = worker_summary(rounds)
    if opts.sim_tpu_ms > 0:
        report["sim_tpu_ms"] = opts.sim_tpu_ms
        report["targets"]["P9_sim_tpu_fps"] = p9_target(report["pipeline"]["fps"], opts.sim_tpu_ms)
    report["thread_ms_per_frame"] = thread_split(rounds, "pipeline")
    report["paced_thread_ms_per_frame"] = thread_split(rounds, "paced")
    applies = report["targets"]["P2_frame_ms"]["applies"]  # the 640x480 source
    report["targets"]["P2prime_thread_cpu_ms"] = p2_prime_target(
        report["thread_ms_per_frame"], applies
    )
    if opts.decode_scale > 1:
        report["decode_scale"] = decode_summary(rounds, opts.decode_scale)
    if opts.motion:
        report["motion"] = motion
        report["targets"]["P10_still_scene_ms"] = motion_target(motion)
    if opts.objects > 0:
        objects = measure_objects(opts.objects, rounds=max(3, opts.rounds))
        on_round(f"object layer: {objects['tracker_zones_ms']['cpu_mean']:.3f} ms per frame")
        report["objects_ms"] = objects
        report["targets"]["P12_objects_ms"] = objects_target(objects)
    return report
