"""``edge-agent bench``: the pipeline against a bare invoke loop, side by side."""

from __future__ import annotations

import argparse
import json
import sys

from edge_agent.errors import ConfigError


def _broker(text: str) -> tuple[str, int]:
    """HOST:PORT."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "bench",
        help="measure the pipeline against a bare invoke loop on the same model",
        description="Runs, interleaved round by round, a bare set_tensor+invoke loop and the "
        "daemon's pipeline (camera -> preprocess -> worker -> decode -> MQTT -> subscriber) "
        "on the same model, runtime and threads, then times a cold `edge-agent run` to its "
        "first result; prints medians over the rounds.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="model file")
    what.add_argument(
        "--all",
        action="store_true",
        help="mobilenet_v2 and yolov8n from $EDGE_AGENT_SHARED/models (default ../shared), "
        "else the bundled demo model",
    )
    p.add_argument("--labels", default="", help="label file for --model")
    p.add_argument(
        "--source",
        default="synthetic",
        help="video file, or synthetic[:WxH] (default: the 640x480 synthetic pattern)",
    )
    p.add_argument("--frames", type=int, default=300, help="frames per round (default 300)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up frames per loop (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument(
        "--threads", type=int, default=0, help="interpreter threads for both (default: all cores)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, usb[:N] or pci[:N]")
    p.add_argument(
        "--broker", type=_broker, default=None, help="HOST:PORT (default: an embedded broker)"
    )
    p.add_argument(
        "--cold-starts",
        type=int,
        default=1,
        help="times `edge-agent run` is started for the start-up figure (default 1; 0: skip)",
    )
    p.add_argument(
        "--pace",
        type=float,
        default=30.0,
        help="frame rate of the paced run that gives the latencies (default 30, a camera's)",
    )
    p.add_argument(
        "--pace-frames",
        type=int,
        default=150,
        help="frames of the paced run per round (default 150; 0: skip it)",
    )
    p.add_argument(
        "--objects",
        type=int,
        default=20,
        help="objects in the object layer's cost run: tracker + 2 zones (default 20; 0: skip)",
    )
    p.add_argument(
        "--sim-tpu",
        type=float,
        default=0.0,
        metavar="MS",
        help="run the model on a simulated Edge TPU taking MS ms per invoke (P9: can the "
        "host keep an accelerator busy?); 2.5 is MobileNet v2 on USB3, 7 SSD v2",
    )
    p.add_argument(
        "--cameras", type=int, default=1, help="cameras reading the source at once (default 1)"
    )
    p.add_argument(
        "--motion",
        action="store_true",
        help="also measure motion gating (P10): a still scene with and without the gate, "
        "and the source with it",
    )
    p.add_argument(
        "--decode-scale",
        type=int,
        choices=(1, 2, 4, 8),
        default=1,
        help="also run the daemon with the MJPG source decoded at 1/N scale "
        "(camera.decode_scale), side by side with the full decode",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Benchmark each model and print its table (or one JSON document).

    Returns:
        0.
    """
    from edge_agent.heap import fix_mmap_threshold
    from edge_agent.tools.bench.report import format_report
    from edge_agent.tools.bench.runner import BenchOptions, default_models, run_bench

    fix_mmap_threshold()  # the pipeline runs in this process: set up as edge-agent run is

    models = default_models() if args.all else [(args.model, args.labels)]
    if not models:
        raise ConfigError("bench --all: no model found (shared models or models/demo)")
    reports = []
    for model, labels in models:
        opts = BenchOptions(
            model=model,
            labels=labels,
            source=args.source,
            frames=args.frames,
            warmup=args.warmup,
            rounds=args.rounds,
            threads=args.threads,
            device=args.device,
            broker=args.broker,
            cold_starts=args.cold_starts,
            pace_fps=args.pace,
            pace_frames=args.pace_frames,
            objects=args.objects,
            sim_tpu_ms=args.sim_tpu,
            cameras=args.cameras,
            motion=args.motion,
            decode_scale=args.decode_scale,
        )
        report = run_bench(opts, lambda line: print(f"  {line}", file=sys.stderr, flush=True))
        reports.append(report)
        if not args.json:
            print(format_report(report), flush=True)
            print(flush=True)
    if args.json:
        print(json.dumps({"benchmarks": reports}, indent=2))
    return 0
