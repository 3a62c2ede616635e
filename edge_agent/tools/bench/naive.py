"""B: the naive loop, as the tutorials write it, for the daemon (C) to be compared with.

One thread does everything in turn: read and decode a frame with OpenCV, resize it with
INTER_AREA, quantize it with the float formula (``round((pixel - mean) / std / scale +
zero_point)`` in float32), ``set_tensor`` + ``invoke`` on the same backend and file the
daemon would use, decode the outputs with the project's decoder, and publish the JSON
with paho at QoS 1 to the bench's broker. Run in its own process, like the bare loop,
so neither holds the other's GIL; its results are counted by the same subscriber.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from typing import Any

import cv2
import numpy as np

from edge_agent.capture.sources import open_capture, parse_source
from edge_agent.errors import EdgeAgentError
from edge_agent.inference.codec import build_codec, load_labels
from edge_agent.inference.engine import Engine
from edge_agent.inference.geometry import plan_fit
from edge_agent.inference.model import ModelOptions
from edge_agent.tools.bench import procfs
from edge_agent.tools.bench.bare import steady_fps
from edge_agent.tools.bench.child import run_in_child
from edge_agent.tools.bench.sink import PREFIX

logger = logging.getLogger(__name__)


def naive_loop(
    options: ModelOptions, source: str, frames: int, warmup: int, broker: tuple[str, int],
    device: str,
) -> dict[str, Any]:  # fmt: skip
    """Run the naive loop; fps, CPU per frame and what was published."""
    from edge_agent.publishing.settings import MqttSettings, base_client

    session = Engine.open(options.request(), warmup=True).session
    codec = build_codec(session.input, session.outputs, options, load_labels(options))
    spec = session.input
    h, w = int(spec.shape[1]), int(spec.shape[2])
    norm, q = codec.preprocessor.norm, spec.quant
    mean, std = np.float32(norm.mean), np.float32(norm.std)
    info = np.iinfo(spec.dtype) if np.issubdtype(spec.dtype, np.integer) else None
    cap = open_capture(parse_source(source), name="naive")
    client = base_client(MqttSettings(host=broker[0], port=broker[1]), f"naive-{device}", None)
    client.connect(broker[0], broker[1], keepalive=30)
    client.loop_start()
    topic = f"{PREFIX}/{device}/results"
    total, sent = warmup + frames, []
    done = np.empty(total, np.float64)
    cpu0 = None
    try:
        for i in range(total):
            if i == warmup:
                cpu0 = procfs.cpu_seconds()
            ok, frame = cap.read()
            if not ok:  # the end of a file: from the start again, as the camera loops
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = cap.read()
                if not ok:
                    raise EdgeAgentError(f"naive loop: cannot read {source}")
            stamp = time.time()
            rgb = cv2.cvtColor(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA),
                               cv2.COLOR_BGR2RGB)  # fmt: skip
            x = (rgb.astype(np.float32) - mean) / std
            if q.scale:
                x = np.round(x / q.scale + q.zero_point)
            if info is not None:
                x = np.clip(x, info.min, info.max)
            session.set_input(x.astype(spec.dtype)[None])
            session.invoke()
            fit = plan_fit(frame.shape[1], frame.shape[0], w, h, "stretch")
            results = codec.decoder(session.output_arrays(), fit)
            payload = {"frame_id": i, "timestamp": stamp,
                       "results": [r.to_json() for r in results]}  # fmt: skip
            sent.append(client.publish(topic, json.dumps(payload), qos=1))
            done[i] = time.monotonic()
        cpu1 = procfs.cpu_seconds()
        for msg in sent:
            msg.wait_for_publish(timeout=10.0)
    finally:
        client.disconnect()
        client.loop_stop()
        cap.release()
    cpu = (cpu1 - cpu0) * 1000.0 / frames if cpu0 is not None and cpu1 is not None else None
    return {"fps": steady_fps(done, warmup), "cpu_ms_per_frame": cpu, "published": len(sent)}


def run_naive(
    options: ModelOptions, source: str, frames: int, warmup: int, broker: tuple[str, int],
    device: str, timeout: float,
) -> dict[str, Any]:  # fmt: skip
    """Run :func:`naive_loop` in a fresh forkserver process (as the bare loop).

    Raises:
        WorkerError: it failed, died or took longer than ``timeout`` seconds.
    """
    # Any error is reported, not only the project's: paho and OpenCV raise their own.
    return run_in_child(naive_loop, (options, source, frames, warmup, broker, device),
                        name="edge-agent-bench-naive", what="naive loop", model=options.path,
                        timeout=timeout, catch=Exception)  # fmt: skip


def naive_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """B's medians over rounds and C/B, the daemon's fps over the naive loop's, per round
    then the median (as the other ratios)."""
    runs = [r for r in rounds if r.get("naive")]
    if not runs:
        return {}
    cpu = [r["naive"]["cpu_ms_per_frame"] for r in runs if r["naive"]["cpu_ms_per_frame"]]
    return {
        "fps": statistics.median(r["naive"]["fps"] for r in runs),
        "cpu_ms_per_frame": statistics.median(cpu) if cpu else None,
        "published": sum(r["naive"]["published"] for r in runs),
        "ratio_c_b": statistics.median(r["pipeline"]["fps"] / r["naive"]["fps"] for r in runs),
    }


def naive_lines(report: dict[str, Any]) -> list[str]:
    """The text report's line for B (none when it did not run)."""
    b = report.get("naive")
    if not b:
        return []
    cpu = "-" if b["cpu_ms_per_frame"] is None else f"{b['cpu_ms_per_frame']:.2f}"
    return [
        f"  naive single-thread loop (B): {b['fps']:.1f} fps, {cpu} ms CPU per frame; "
        f"daemon / naive (C/B) {b['ratio_c_b']:.3f}"
    ]
