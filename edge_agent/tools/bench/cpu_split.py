"""P2': the daemon's CPU per frame outside the worker, split by thread.

The pipeline run samples each thread of the process it runs in (pipeline, camera,
MQTT publisher; the harness's main thread apart) at the end of the warm-up and at the
last frame; this module takes the medians over rounds and judges the total.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

P2_PRIME_MAX_MS = 1.0  # daemon CPU per frame outside the worker, 640x480 source


def thread_split(rounds: Sequence[dict[str, Any]], run: str) -> dict[str, float]:
    """Median over rounds of each thread's CPU ms per frame in one run kind."""
    names: set[str] = set()
    for r in rounds:
        names |= set((r.get(run) or {}).get("thread_ms_per_frame") or {})
    out = {}
    for name in sorted(names):
        values = [
            r[run]["thread_ms_per_frame"][name]
            for r in rounds
            if name in ((r.get(run) or {}).get("thread_ms_per_frame") or {})
        ]
        out[name] = float(statistics.median(values))
    return out


def p2_prime_target(split: dict[str, float], applies: bool) -> dict[str, Any]:
    """P2': the daemon threads' total (saturated run) against 1.0 ms per frame."""
    value = split.get("total")
    met = None if value is None else value <= P2_PRIME_MAX_MS
    return {"value": value, "limit": P2_PRIME_MAX_MS, "met": met, "applies": applies}


def thread_lines(report: dict[str, Any]) -> list[str]:
    """The text report's lines for the split (none when it was not measured)."""
    lines = []
    for run, title in (
        ("thread_ms_per_frame", "saturated"),
        ("paced_thread_ms_per_frame", "paced"),
    ):
        split = report.get(run) or {}
        if split:
            parts = ", ".join(
                f"{k} {v:.3f}" for k, v in split.items() if k not in ("total", "bench_main")
            )
            lines.append(
                f"  CPU per frame by thread, {title} (ms): {parts}; total {split['total']:.3f}"
            )
    return lines
