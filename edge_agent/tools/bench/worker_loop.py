"""D: the daemon's inference worker fed by a parent that does nothing else.

Between A (``invoke()`` in a loop, in one process) and C (the daemon) sits the process
boundary: the worker copies each input out of shared memory, invokes, copies the
outputs back and answers on a pipe, and the parent receives and submits again. This
loop starts the same :class:`~edge_agent.inference.worker.WorkerHandle` the supervisor
starts, preprocesses one real frame into both input slots once, and keeps two requests
in flight as the pipeline does, doing nothing between a completion and the next submit.

So D is the fastest the daemon could run with this worker, D/A what the process
boundary costs, and C/D what the pipeline's own host work costs on top.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_agent.errors import WorkerError
from edge_agent.inference.codec import build_codec, load_labels
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.protocol import Done
from edge_agent.inference.slots import SLOTS, Buffers
from edge_agent.inference.worker import WorkerHandle, forkserver_context
from edge_agent.tools.bench.bare import steady_fps


def worker_loop(
    options: ModelOptions, image: np.ndarray, frames: int, warmup: int, timeout: float
) -> dict[str, Any]:
    """Start a worker on the model and time ``frames`` completions after ``warmup`` more.

    Args:
        options: the model (its request gives backend, file and threads).
        image: a BGR frame from the benchmark's source, preprocessed once.
        frames, warmup: timed and untimed completions.
        timeout: seconds for the whole run, model load included.

    Returns:
        fps, the worker's invoke p50, and the backend it ran on.

    Raises:
        WorkerError: the worker failed to load, died, hung or an invoke failed.
    """
    deadline = time.monotonic() + timeout
    worker = WorkerHandle(options.request(), warmup=options.warmup, context=forkserver_context())
    info = worker.start(timeout)
    buffers = None
    try:
        buffers = Buffers(info.input, info.outputs)
        codec = build_codec(info.input, info.outputs, options, load_labels(options))
        for slot in range(SLOTS):
            codec.preprocessor(image, buffers.inputs[slot])
        worker.attach(buffers)
        total = warmup + frames
        done = np.empty(total, np.float64)
        invoke_ms = np.empty(total, np.float64)
        for seq in range(min(SLOTS, total)):
            worker.submit(seq, seq)
        for i in range(total):
            msg = worker.receive(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise WorkerError(f"model {info.model_path}: worker loop took over {timeout:.0f}s")
            if not isinstance(msg, Done):
                raise WorkerError(f"model {info.model_path}: {getattr(msg, 'message', msg)}")
            done[i] = time.monotonic()
            invoke_ms[i] = msg.invoke_ms
            if i + SLOTS < total:
                worker.submit(i + SLOTS, msg.slot)
    finally:
        worker.stop()
        if buffers is not None:
            buffers.close()
    return {
        "fps": steady_fps(done, warmup),
        "invoke_p50_ms": float(np.percentile(invoke_ms[warmup:], 50)),
        "backend": info.backend,
    }


def worker_summary(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """D's median fps over rounds, and per round then the median: D/A and C/D (and the
    reduced-decode run over D when it ran)."""
    runs = [r for r in rounds if r.get("worker")]
    if not runs:
        return {}
    reduced = None
    if all("reduced" in r for r in runs):  # with --decode-scale: that run over D
        reduced = statistics.median(r["reduced"]["fps"] / r["worker"]["fps"] for r in runs)
    return {
        "fps": statistics.median(r["worker"]["fps"] for r in runs),
        "invoke_p50_ms": statistics.median(r["worker"]["invoke_p50_ms"] for r in runs),
        "ratio_d_a": statistics.median(r["worker"]["fps"] / r["bare"]["fps"] for r in runs),
        "ratio_c_d": statistics.median(r["pipeline"]["fps"] / r["worker"]["fps"] for r in runs),
        "ratio_reduced_d": reduced,
    }


def worker_lines(report: dict[str, Any]) -> list[str]:
    """The text report's line for D (none when it did not run)."""
    d = report.get("worker_loop")
    if not d:
        return []
    reduced = d.get("ratio_reduced_d")
    with_reduced = "" if reduced is None else f", at decode_scale {reduced:.3f}"
    return [
        f"  worker alone, two in flight (D): {d['fps']:.1f} fps; process boundary (D/A) "
        f"{d['ratio_d_a']:.3f}, pipeline's own work (C/D) {d['ratio_c_d']:.3f}{with_reduced}"
    ]
