"""``camera.decode_scale`` measured side by side: the daemon's pipeline with the source's
MJPG decoded at 1/N scale (run ``reduced``), beside the same round's full decode (C).

The decoded frame is smaller, so the camera thread's decode and the pipeline thread's
resize both shrink; the figures are fps, the ratio to C in the same round, and the
daemon's CPU per frame by thread (P2′'s measure).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from edge_agent.tools.bench.cpu_split import thread_split


def decode_summary(rounds: Sequence[dict[str, Any]], scale: int) -> dict[str, Any]:
    """Medians over the rounds that ran ``reduced``: fps, reduced/C, CPU by thread."""
    ran = [r for r in rounds if "reduced" in r]
    return {
        "scale": scale,
        "fps": statistics.median(r["reduced"]["fps"] for r in ran),
        "ratio_to_c": statistics.median(r["reduced"]["fps"] / r["pipeline"]["fps"] for r in ran),
        "thread_ms_per_frame": thread_split(ran, "reduced"),
        "full_thread_ms_per_frame": thread_split(ran, "pipeline"),
        "frames": ran[-1]["reduced"]["frames"],
        "errors": sum(r["reduced"]["errors"] for r in ran),
    }


def decode_lines(report: dict[str, Any]) -> list[str]:
    """The text report's line for the reduced decode (none when it was not measured)."""
    dec = report.get("decode_scale")
    if not dec:
        return []
    split = dec["thread_ms_per_frame"]
    parts = ", ".join(f"{k} {v:.3f}" for k, v in split.items() if k not in ("total", "bench_main"))
    full = dec["full_thread_ms_per_frame"].get("total")
    return [
        f"  decode_scale {dec['scale']}: {dec['fps']:.1f} fps ({dec['ratio_to_c']:.3f} x C); "
        f"CPU per frame by thread (ms): {parts}; total {split.get('total', 0):.3f} "
        f"(full decode {full or 0:.3f})"
    ]
