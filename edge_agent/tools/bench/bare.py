"""The physical limit: ``set_tensor`` + ``invoke()`` in a loop, nothing else.

It runs in a fresh process of its own (like the daemon's worker), so that its
interpreter neither shares a GIL with nor adds memory to the process the pipeline is
measured in. The model is opened through the same backend registry and request as the
worker (same backend, runtime, file and thread count), and the input is a real frame
preprocessed by the model's own codec.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edge_agent.errors import EdgeAgentError
from edge_agent.inference.codec import build_codec, load_labels
from edge_agent.inference.engine import Engine
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.model_info import inspect_model
from edge_agent.inference.runtime import runtime_version
from edge_agent.tools.bench import procfs
from edge_agent.tools.bench.child import run_in_child

logger = logging.getLogger(__name__)


def steady_fps(done: np.ndarray, warmup: int) -> float:
    """Frames per second over the completions after the first ``warmup`` ones.

    Args:
        done: monotonic completion times, in order.
        warmup: completions left out (start-up transients).

    Returns:
        ``(n - 1) / (last - first)`` over the kept completions; 0.0 with fewer than two.
    """
    kept = done[warmup:]
    if kept.size < 2 or kept[-1] <= kept[0]:
        return 0.0
    return float((kept.size - 1) / (kept[-1] - kept[0]))


def _effective_threads(model_path: str, requested: int) -> int:
    """The interpreter threads a model really gets (make_session runs SSD post-processing
    models single-threaded, tensorflow#56058)."""
    return 1 if requested > 1 and inspect_model(model_path).single_threaded else requested


def bare_loop(options: ModelOptions, image: np.ndarray, frames: int, warmup: int) -> dict:
    """Open the model as the worker does and time ``frames`` invokes after ``warmup`` more.

    Args:
        options: the model (its request gives backend, file and threads).
        image: a BGR frame from the benchmark's source, preprocessed once.
        frames: timed invokes.
        warmup: untimed invokes first (on top of the engine's own warm-up).

    Returns:
        fps, invoke percentiles, CPU per invoke and the process's memory.

    Raises:
        ModelError / BackendUnavailable: the model does not load.
    """
    request = options.request()
    engine = Engine.open(request, warmup=options.warmup)
    session = engine.session
    codec = build_codec(session.input, session.outputs, options, load_labels(options))
    tensor = np.empty(session.input.shape, session.input.dtype)
    codec.preprocessor(image, tensor)
    total = warmup + frames
    done = np.empty(total, np.float64)
    invoke_ms = np.empty(total, np.float64)
    cpu0 = None
    for i in range(total):
        if i == warmup:
            cpu0 = procfs.cpu_seconds()
        session.set_input(tensor)
        invoke_ms[i] = session.invoke()
        done[i] = time.monotonic()
    cpu1 = procfs.cpu_seconds()
    mem = procfs.memory()
    # The first timed completion starts the clock: fps counts frames - 1 intervals.
    timed = invoke_ms[warmup:]
    cpu_ms = (cpu1 - cpu0) * 1000.0 / frames if cpu0 is not None and cpu1 is not None else None
    return {
        "fps": steady_fps(done, warmup),
        "invoke_p50_ms": float(np.percentile(timed, 50)),
        "invoke_p99_ms": float(np.percentile(timed, 99)),
        "cpu_ms_per_frame": cpu_ms,
        "rss_mb": mem.rss if mem else None,
        "peak_rss_mb": mem.peak if mem else None,
        "backend": session.backend,
        "runtime": session.runtime,
        "runtime_version": runtime_version(session.runtime),
        "model_file": session.model_path,
        "threads": _effective_threads(session.model_path, request.num_threads),
        "input": list(session.input.shape),
        "input_dtype": str(session.input.dtype),
    }


def run_bare(
    options: ModelOptions, image: np.ndarray, frames: int, warmup: int, timeout: float
) -> dict[str, Any]:
    """Run :func:`bare_loop` in a fresh forkserver process.

    Args:
        options, image, frames, warmup: see :func:`bare_loop`.
        timeout: seconds for the whole run, model load included.

    Returns:
        The loop's report.

    Raises:
        WorkerError: the model failed to load, the process died, or it timed out.
    """
    return run_in_child(bare_loop, (options, image, frames, warmup), name="edge-agent-bench-bare",
                        what="bare invoke loop", model=options.path, timeout=timeout,
                        catch=EdgeAgentError)  # fmt: skip
