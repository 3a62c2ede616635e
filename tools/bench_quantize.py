"""Benchmark: LUT quantization vs the seed's float formula, and LiteRT vs tflite-runtime.

Run side by side in one process; prints medians and ratios (machines here are shared
and noisy, so only the ratios mean anything). ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.inference.preprocess import Preprocessor  # noqa: E402
from edge_agent.inference.runtime import (  # noqa: E402
    LITERT,
    TFLITE_RUNTIME,
    make_session,
    runtime_module,
    runtime_version,
)
from edge_agent.inference.tensors import QuantParams, TensorSpec  # noqa: E402

SHARED = Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))
YOLO_INPUT = TensorSpec(
    0, "images", (1, 640, 640, 3), np.dtype(np.int8), QuantParams(0.01865844801068306, -14)
)


def median_ms(fn, repeat: int) -> float:
    """Median wall time of ``fn`` in ms over ``repeat`` runs (after one warm-up)."""
    return side_by_side({"x": fn}, repeat)["x"]


def side_by_side(fns: dict, repeat: int) -> dict:
    """Median ms of each function, run interleaved so that machine noise hits all alike."""
    for fn in fns.values():
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_quantize(repeat: int) -> dict:
    """640x480 frame -> yolov8n input: the fused LUT path vs the seed float formula."""
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    pre = Preprocessor(YOLO_INPUT, resize="letterbox")
    out = np.empty(YOLO_INPUT.shape, np.int8)
    q = YOLO_INPUT.quant
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    quantized = np.empty_like(rgb, dtype=np.int8)
    table = pre._table

    def seed_full():
        # Same geometry, then the seed formula over the whole input: img/255/scale + zp.
        canvas = np.full((640, 640, 3), 114, np.uint8)
        canvas[80:560] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        x = np.clip(np.round(canvas / 255.0 / q.scale + q.zero_point), -128, 127)
        return x.astype(np.int8)[None]

    def seed_quantize():
        return np.clip(np.round(rgb / 255.0 / q.scale + q.zero_point), -128, 127).astype(np.int8)

    def lut_quantize():
        return cv2.LUT(rgb, table, dst=quantized)

    daemon_out = np.empty_like(quantized)

    def daemon_quantize():
        # What the daemon runs: the table, or its proven-identical SIMD form.
        return pre.quantize(rgb, daemon_out)

    pre(frame, out)
    exact = (
        bool(np.array_equal(out, seed_full()))
        and bool(np.array_equal(lut_quantize(), seed_quantize()))
        and bool(np.array_equal(daemon_quantize(), seed_quantize()))
    )
    t = side_by_side(
        {
            "lut": lut_quantize,
            "daemon": daemon_quantize,
            "formula": seed_quantize,
            "full": lambda: pre(frame, out),
            "seed_full": seed_full,
        },
        repeat,
    )
    return {
        "bit_exact": exact,
        "lut_ms": round(t["lut"], 3),
        "formula_ms": round(t["formula"], 3),
        "speedup": round(t["formula"] / t["lut"], 1),
        "daemon_ms": round(t["daemon"], 3),
        "daemon_speedup": round(t["formula"] / t["daemon"], 1),
        "full_preprocess_ms": round(t["full"], 3),
        "seed_full_preprocess_ms": round(t["seed_full"], 3),
        "full_speedup": round(t["seed_full"] / t["full"], 1),
    }


def bench_runtimes(model: Path, threads: int, repeat: int) -> dict:
    """Invoke time of the same model on LiteRT and tflite-runtime (when both exist)."""
    out = {"model": model.name, "threads": threads}
    for name in (LITERT, TFLITE_RUNTIME):
        module = runtime_module(name)
        if module is None:
            out[name] = None
            continue
        session = make_session(module, name, str(model), backend="cpu", num_threads=threads)
        out[name] = {
            "version": runtime_version(name),
            "invoke_ms": round(median_ms(session.invoke, repeat), 3),
        }
    if out.get(LITERT) and out.get(TFLITE_RUNTIME):
        out["speedup"] = round(out[TFLITE_RUNTIME]["invoke_ms"] / out[LITERT]["invoke_ms"], 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {"quantize": bench_quantize(args.repeat), "runtimes": []}
    for name in ("mobilenet_v2_1.0_224_quant.tflite", "yolov8n_full_integer_quant.tflite"):
        path = SHARED / "models" / name
        if path.is_file():
            report["runtimes"].append(bench_runtimes(path, args.threads, max(5, args.repeat // 5)))
    if not report["runtimes"]:
        fixture = REPO / "tests/fixtures/models/color_uint8.tflite"
        report["runtimes"].append(bench_runtimes(fixture, args.threads, args.repeat))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    q = report["quantize"]
    print("input quantization of a 640x480 RGB frame, yolov8n int8 parameters (median ms)")
    print(
        f"  LUT {q['lut_ms']:.3f}  float formula {q['formula_ms']:.3f}  "
        f"speedup x{q['speedup']}  bit-exact: {q['bit_exact']}"
    )
    print(f"  daemon's path {q['daemon_ms']:.3f}  speedup x{q['daemon_speedup']}")
    print(
        f"  640x480 BGR frame -> 640x640 letterboxed int8 input: fused "
        f"{q['full_preprocess_ms']:.3f}  seed {q['seed_full_preprocess_ms']:.3f}  "
        f"speedup x{q['full_speedup']}"
    )
    print(f"CPU invoke, {args.threads} threads (median ms)")
    for r in report["runtimes"]:
        lite, tfl = r.get(LITERT), r.get(TFLITE_RUNTIME)
        line = f"  {r['model']}: LiteRT {lite['invoke_ms'] if lite else '-'}"
        line += f"  tflite-runtime {tfl['invoke_ms'] if tfl else 'not installed'}"
        if "speedup" in r:
            line += f"  speedup x{r['speedup']}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
