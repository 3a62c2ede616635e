"""The benchmark report: medians over rounds, the performance targets, the text table.

Every figure is the median over the rounds of that figure (each round's pipeline fps
is divided by the same round's bare fps before the median is taken); peaks are the
maximum over the rounds. Each round's raw figures stay in ``report["rounds"]``.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from typing import Any

from edge_agent.inference.runtime import default_threads
from edge_agent.tools.bench.cpu_split import thread_lines
from edge_agent.tools.bench.decode_cost import decode_lines
from edge_agent.tools.bench.motion_cost import motion_lines
from edge_agent.tools.bench.naive import naive_lines
from edge_agent.tools.bench.objects_cost import objects_lines
from edge_agent.tools.bench.recorder import STAGES
from edge_agent.tools.bench.worker_loop import worker_lines

# The project's performance targets (ratios and budgets; absolute times vary by box).
RATIO_MIN = 0.95  # P1: pipeline fps / bare invoke fps
OVERHEAD_MAX_MS = 2.0  # P2: per-frame overhead outside invoke, 640x480 source
RSS_MAX_MB = 150.0  # P5: daemon + worker peak RSS
GROWTH_MAX_MB = 2.0  # P5: RSS growth over a run
LATENCY_SLACK_MS = 15.0  # P6: end-to-end p99 <= invoke p50 + this
STARTUP_MAX_S = 3.0  # P7: exec -> first result delivered

PROCESSES = ("daemon", "forkserver", "worker", "resource_tracker", "total", "all")
PROCESS_NAMES = {
    "daemon": "daemon",
    "forkserver": "forkserver",
    "worker": "worker",
    "resource_tracker": "resource tracker",
    "total": "daemon + worker",
    "all": "all four",
}
STAGE_NAMES = {
    "capture_read": "capture (source read/decode)",
    "capture": "capture (frame age at pick-up)",
    "preprocess": "preprocess + quantize",
    "transfer": "transfer to/from worker",
    "invoke": "invoke (in the worker)",
    "postprocess": "postprocess (decode)",
    "publish": "publish (to MQTT thread)",
    "end_to_end": "end to end: capture->publish",
    "outside_invoke": "end to end minus the frame's invoke",
}


def _get(tree: dict[str, Any], path: str) -> Any:
    """``tree["a"]["b"]`` for ``"a.b"``; None when missing."""
    node: Any = tree
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _median(rounds: Sequence[dict[str, Any]], path: str) -> float | None:
    """Median over rounds of a nested figure (rounds without it are skipped)."""
    values = [v for v in (_get(r, path) for r in rounds) if v is not None]
    return float(statistics.median(values)) if values else None


def _max(rounds: Sequence[dict[str, Any]], path: str) -> float | None:
    """Maximum over rounds of a nested figure."""
    values = [v for v in (_get(r, path) for r in rounds) if v is not None]
    return float(max(values)) if values else None


def _sum(rounds: Sequence[dict[str, Any]], path: str) -> int:
    """Sum over rounds of a counter."""
    return int(sum(_get(r, path) or 0 for r in rounds))


def _target(value: float | None, limit: float, at_most: bool, applies: bool = True) -> dict:
    """One target's verdict."""
    met = None if value is None else (value <= limit if at_most else value >= limit)
    return {"value": value, "limit": limit, "met": met, "applies": applies}


def _cpu_bound(rounds: Sequence[dict[str, Any]]) -> float | None:
    """The highest ratio the machine's cores allow for the CPU the pipeline spends.

    Per frame the pipeline costs the worker's CPU (the interpreter, all its threads)
    plus the daemon's and the broker's; the cores can supply that at most
    ``cores / cost`` times a second. Divided by the bare loop's fps, capped at 1.
    With as many interpreter threads as cores the bare loop already uses every core,
    so this is below 1 by the share of the daemon and the broker.
    """
    bounds = []
    cores = default_threads()
    for r in rounds:
        cpu, bare = r["pipeline"].get("cpu_ms_per_frame") or {}, r["bare"].get("fps")
        cost = sum(cpu.get(k) or 0.0 for k in ("worker", "daemon", "broker"))
        if cost > 0 and bare:
            bounds.append(min(1.0, cores * 1000.0 / cost / bare))
    return float(statistics.median(bounds)) if bounds else None


def _stages(rounds: Sequence[dict[str, Any]], run: str) -> dict[str, dict[str, float | None]]:
    """Median over rounds of each stage's p50, p99 and mean in one run kind."""
    return {
        name: {q: _median(rounds, f"{run}.stages.{name}.{q}") for q in ("p50", "p99", "mean")}
        for name in STAGES
    }


def summarize(
    opts: Any,
    source: str,
    frame_shape: tuple[int, ...],
    broker: str,
    rounds: list[dict[str, Any]],
    starts: list[dict[str, Any]],
) -> dict[str, Any]:
    """Build the report of one model from its rounds and cold starts.

    Args:
        opts: the BenchOptions.
        source: the resolved source.
        frame_shape: shape of the source's frames.
        broker: description of the broker used.
        rounds: ``{"bare": ..., "pipeline": ...}`` per round.
        starts: ``edge-agent run`` cold starts.

    Returns:
        The JSON-ready report.
    """
    for r in rounds:
        bare, pipe = r["bare"]["fps"], r["pipeline"]["fps"]
        r["ratio"] = pipe / bare if bare else None
    first = rounds[0]
    info = first["bare"]
    stages = _stages(rounds, "pipeline")
    paced = _stages(rounds, "paced")
    bare_fps = _median(rounds, "bare.fps")
    pipe_fps = _median(rounds, "pipeline.fps")
    stage_sum = sum(
        stages[s]["mean"] or 0.0 for s in ("capture_read", "preprocess", "postprocess", "publish")
    )
    memory: dict[str, Any] = {}
    for proc in PROCESSES:
        memory[proc] = {
            "peak_mb": _max(rounds, f"pipeline.memory.{proc}.peak_mb"),
            "steady_mb": _median(rounds, f"pipeline.memory.{proc}.steady_mb"),
            "pss_mb": _median(rounds, f"pipeline.memory.{proc}.pss_mb"),
        }
    # The real `edge-agent run` (its own imports, a camera-paced source), when started.
    memory["daemon_run"] = {
        proc: {
            "peak_mb": _max(starts, f"memory_mb.{proc}.peak_mb"),
            "steady_mb": _median(starts, f"memory_mb.{proc}.steady_mb"),
            "pss_mb": _median(starts, f"memory_mb.{proc}.pss_mb"),
        }
        for proc in PROCESSES
    }
    memory["growth_mb"] = _max(rounds, "pipeline.memory.growth_mb")
    memory["growth_frames"] = _max(rounds, "pipeline.memory.growth_frames")
    cold = [s["first_result_s"] for s in starts]
    report: dict[str, Any] = {
        "model": opts.model,
        "model_file": info["model_file"],
        "labels": opts.labels,
        "backend": info["backend"],
        "runtime": info["runtime"],
        "runtime_version": info["runtime_version"],
        "threads": info["threads"],
        "input": info["input"],
        "input_dtype": info["input_dtype"],
        "source": source,
        "frame_size": [int(frame_shape[1]), int(frame_shape[0])],
        "frames": opts.frames,
        "warmup": opts.warmup,
        "rounds_run": len(rounds),
        "broker": broker,
        "bare": {
            "fps": bare_fps,
            "invoke_p50_ms": _median(rounds, "bare.invoke_p50_ms"),
            "invoke_p99_ms": _median(rounds, "bare.invoke_p99_ms"),
        },
        "pipeline": {
            "fps": pipe_fps,
            "frames": _sum(rounds, "pipeline.frames"),
            "published": _sum(rounds, "pipeline.published"),
            "delivered": _sum(rounds, "pipeline.delivered"),
            "duplicates": _sum(rounds, "pipeline.duplicates"),
            "dropped": _sum(rounds, "pipeline.dropped"),
            "worker_restarts": _sum(rounds, "pipeline.worker_restarts"),
            "errors": _sum(rounds, "pipeline.errors"),
        },
        "ratio": _median(rounds, "ratio"),
        "ratio_cpu_bound": _cpu_bound(rounds),
        "stages_ms": stages,
        "end_to_end_ms": {q: stages["end_to_end"][q] for q in ("p50", "p99")},
        "delivered_ms": {q: _median(rounds, f"pipeline.delivered_ms.{q}") for q in ("p50", "p99")},
        "paced": {
            "fps": getattr(opts, "pace_fps", None) if "paced" in first else None,
            "frames": _sum(rounds, "paced.frames"),
            "delivered": _sum(rounds, "paced.delivered"),
            "dropped": _sum(rounds, "paced.dropped"),
            "stages_ms": paced,
            "end_to_end_ms": {q: paced["end_to_end"][q] for q in ("p50", "p99")},
            "delivered_ms": {q: _median(rounds, f"paced.delivered_ms.{q}") for q in ("p50", "p99")},
            "cpu_ms_per_frame": {
                k: _median(rounds, f"paced.cpu_ms_per_frame.{k}")
                for k in ("daemon", "worker", "broker")
            },
        },
        "overhead_ms": {
            # Each frame's capture->publish minus its own invoke, at the camera's pace.
            "frame_p50": (paced if "paced" in first else stages)["outside_invoke"]["p50"],
            "frame_p99": (paced if "paced" in first else stages)["outside_invoke"]["p99"],
            "daemon_cpu": _median(rounds, "pipeline.cpu_ms_per_frame.daemon"),
            "stage_sum": stage_sum,
            "wall": (1000.0 / pipe_fps - 1000.0 / bare_fps) if pipe_fps and bare_fps else None,
        },
        "cpu_ms_per_frame": {
            "daemon": _median(rounds, "pipeline.cpu_ms_per_frame.daemon"),
            "worker": _median(rounds, "pipeline.cpu_ms_per_frame.worker"),
            "broker": _median(rounds, "pipeline.cpu_ms_per_frame.broker"),
            "bare": _median(rounds, "bare.cpu_ms_per_frame"),
        },
        "startup_s": {
            "daemon_first_result": float(statistics.median(cold)) if cold else None,
            "daemon_runs": len(cold),
            "pipeline_first_result": first["pipeline"]["startup_s"],
            "worker_ready": first["pipeline"]["worker_ready_s"],
        },
        "memory_mb": memory,
    }
    report["targets"] = targets(report)
    report["rounds"] = rounds
    report["daemon_starts"] = starts
    return report


def targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The performance targets this benchmark can check, with their verdicts.

    ``applies`` says whether the run is the one a target is defined on (P2: a 640x480
    source; P5's RSS budget: yolov8n); the verdict is given either way.
    """
    # Latency is judged where a camera runs: paced below capacity (the saturated run
    # queues up to three frames by design and is reported beside it).
    run = report["paced"] if report["paced"]["fps"] else report
    e2e = run["end_to_end_ms"]["p99"]
    invoke = run["stages_ms"]["invoke"]["p50"]
    startup = report["startup_s"]["daemon_first_result"]
    if startup is None:
        startup = report["startup_s"]["pipeline_first_result"]
    vga = report["frame_size"] == [640, 480]
    over = report["overhead_ms"]
    return {
        "P1_ratio": _target(report["ratio"], RATIO_MIN, at_most=False),
        # P2 two ways: the time a frame spends outside invoke on its way from capture to
        # publish, and the CPU the daemon process spends per frame (which on a small box
        # is taken from the interpreter).
        "P2_frame_ms": _target(over["frame_p50"], OVERHEAD_MAX_MS, at_most=True, applies=vga),
        "P2_cpu_ms": _target(over["daemon_cpu"], OVERHEAD_MAX_MS, at_most=True, applies=vga),
        # Judged on the real `edge-agent run` when it was started: in the pipeline run the
        # bench's own process plays the daemon, holding the bare loop's interpreter, the
        # recorders and the subscriber besides (about 9 MB more).
        "P5_peak_rss_mb": _target(
            report["memory_mb"]["daemon_run"]["total"]["peak_mb"]
            or report["memory_mb"]["total"]["peak_mb"],
            RSS_MAX_MB,
            at_most=True,
            applies="yolov8n" in os.path.basename(report["model"]),
        ),
        "P5_growth_mb": _target(report["memory_mb"]["growth_mb"], GROWTH_MAX_MB, at_most=True),
        "P6_e2e_p99_ms": _target(
            e2e, (invoke or 0.0) + LATENCY_SLACK_MS, at_most=True, applies=invoke is not None
        ),
        # The same budget on what the pipeline adds to each frame, which the invoke's own
        # tail (a busy machine) does not move.
        "P6_added_p99_ms": _target(
            run["stages_ms"]["outside_invoke"]["p99"], LATENCY_SLACK_MS, at_most=True
        ),
        "P7_startup_s": _target(startup, STARTUP_MAX_S, at_most=True),
    }


def _num(value: float | None, digits: int = 2) -> str:
    """A figure, or '-' when unknown."""
    return "-" if value is None else f"{value:.{digits}f}"


def _verdict(target: dict[str, Any]) -> str:
    """met / MISSED / n/a, with a note when the run is not the target's own."""
    word = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
    return word if target["applies"] else f"{word} (not the run it is defined on)"


def format_report(report: dict[str, Any]) -> str:
    """The human-readable table of one model's report.

    Args:
        report: from :func:`summarize`.

    Returns:
        Text lines (no trailing newline).
    """
    rounds = report["rounds"]
    pr = report["paced"]
    w, h = report["frame_size"]
    lines = [
        f"edge-agent bench: {os.path.basename(report['model'])}",
        f"  {report['backend']} backend, {report['runtime']} {report['runtime_version']}, "
        f"{report['threads']} threads, input {'x'.join(map(str, report['input']))} "
        f"{report['input_dtype']}",
        f"  source {report['source']} ({w}x{h}), {report['frames']} frames x "
        f"{report['rounds_run']} rounds after {report['warmup']} warm-up frames, "
        f"broker {report['broker']}",
        "",
        f"  {'':34}{'median':>9}"
        + "".join(f"{'round ' + str(i + 1):>10}" for i in range(len(rounds))),
    ]

    def row(label: str, value: float | None, per_round: list, digits: int = 1) -> None:
        cells = "".join(f"{_num(v, digits):>10}" for v in per_round)
        lines.append(f"  {label:34}{_num(value, digits):>9}{cells}")

    row("bare set_tensor+invoke fps", report["bare"]["fps"], [r["bare"]["fps"] for r in rounds])
    row("pipeline fps", report["pipeline"]["fps"], [r["pipeline"]["fps"] for r in rounds])
    row("ratio pipeline / bare", report["ratio"], [r["ratio"] for r in rounds], 3)
    bound = report["ratio_cpu_bound"]
    why = "" if bound is not None else "   (no CPU figures: /proc unreadable or no frames)"
    lines.append(f"  {'ratio the cores allow (CPU/frame)':34}{_num(bound, 3):>9}{why}")
    p = report["pipeline"]
    lines += [
        f"  frames {p['frames']}, published {p['published']}, delivered {p['delivered']}, "
        f"duplicates {p['duplicates']}, dropped {p['dropped']}, errors {p['errors']}, "
        f"worker restarts {p['worker_restarts']}; paced run: frames {pr['frames']}, "
        f"delivered {pr['delivered']}, dropped {pr['dropped']}",
        "",
        f"  {'latency (ms)':34}{'saturated':>20}{'paced ' + _num(pr['fps'], 0) + ' fps':>20}",
        f"  {'':34}{'p50':>10}{'p99':>10}{'p50':>10}{'p99':>10}",
    ]

    def pair(title: str, a: dict, b: dict) -> None:
        lines.append(
            f"  {title:34}{_num(a.get('p50')):>10}{_num(a.get('p99')):>10}"
            f"{_num(b.get('p50')):>10}{_num(b.get('p99')):>10}"
        )

    for name, title in STAGE_NAMES.items():
        pair(title, report["stages_ms"][name], pr["stages_ms"][name])
    pair("delivered: capture->subscriber", report["delivered_ms"], pr["delivered_ms"])
    bare = report["bare"]
    pair("bare invoke", {"p50": bare["invoke_p50_ms"], "p99": bare["invoke_p99_ms"]}, {})
    o, c, s = report["overhead_ms"], report["cpu_ms_per_frame"], report["startup_s"]
    lines += [
        "",
        f"  overhead per frame outside invoke: {_num(o['frame_p50'])} ms p50 "
        f"({_num(o['frame_p99'])} p99) on the frame's path (paced); "
        f"{_num(o['daemon_cpu'])} ms CPU in the daemon process (saturated); "
        f"stage sum {_num(o['stage_sum'])} ms; wall {_num(o['wall'])} ms",
        f"  CPU per frame (ms): daemon {_num(c['daemon'])}, worker {_num(c['worker'])}, "
        f"broker+subscriber {_num(c['broker'])}; bare loop {_num(c['bare'])}; "
        f"paced: daemon {_num(pr['cpu_ms_per_frame']['daemon'])}",
        f"  start-up: first result {_num(s['daemon_first_result'])} s after `edge-agent run` "
        f"exec (median of {s['daemon_runs']}); in-process pipeline "
        f"{_num(s['pipeline_first_result'])} s (worker ready {_num(s['worker_ready'])} s)",
        "",
        f"  {'memory (MB)':34}{'bench pipeline (saturated)':>30}{'edge-agent run':>30}",
        f"  {'':34}" + f"{'peak':>10}{'steady':>10}{'pss':>10}" * 2,
    ]
    m = report["memory_mb"]
    for proc, title in PROCESS_NAMES.items():
        a, b = m[proc], m["daemon_run"][proc]
        lines.append(
            f"  {title:34}"
            + "".join(
                f"{_num(x[q], 1):>10}" for x in (a, b) for q in ("peak_mb", "steady_mb", "pss_mb")
            )
        )
    lines.append(
        f"  growth {_num(m['growth_mb'], 2)} MB over {int(m['growth_frames'] or 0)} frames"
    )
    lines += naive_lines(report) + worker_lines(report)
    lines += objects_lines(report) + thread_lines(report)
    lines += motion_lines(report) + decode_lines(report)
    lines += ["", "  targets"]
    for name, t in report["targets"].items():
        lines.append(
            f"  {name:34}{_num(t['value']):>9}   limit {_num(t['limit']):>7}   {_verdict(t)}"
        )
    return "\n".join(lines)
