"""A rollout's report: per device and per wave, as a text table or a JSON summary."""

from __future__ import annotations

from collections import Counter
from typing import Any

from edge_agent.tools.release.rollout.store import DeviceStep, Rollout

_BAR = 30


def summary(ro: Rollout) -> dict[str, Any]:
    """The machine-readable report (``--json``)."""
    waves = []
    for i, devices in enumerate(ro.waves):
        counts = Counter(ro.devices[d].step.value for d in devices)
        started, ended = ro.wave_started.get(i), ro.wave_ended.get(i)
        waves.append({
            "wave": i + 1, "size": len(devices), "counts": dict(sorted(counts.items())),
            "failures": ro.wave_failures(i),
            "seconds": round(ended - started, 3) if started and ended else None,
        })  # fmt: skip
    devices = {}
    for name, r in sorted(ro.devices.items()):
        took = r.done_at - r.sent_at if r.done_at and r.sent_at else None
        devices[name] = {
            "wave": r.wave + 1, "state": r.step.value, "reason": r.reason,
            "seconds": round(took, 3) if took is not None else None,
            "rollback_sent": r.rollback_sent,
        }  # fmt: skip
    return {
        "id": ro.id, "release": ro.label, "group": ro.group, "status": ro.status.value,
        "plan": ro.plan.describe(), "request_id": ro.request_id,
        "wave": min(ro.wave + 1, len(ro.waves)), "waves": waves, "devices": devices,
        "left_out": dict(sorted(ro.left_out.items())), "halted_reason": ro.halted_reason,
        "touched": sum(1 for r in ro.devices.values() if r.sent_at is not None),
    }  # fmt: skip


def progress_line(ro: Rollout) -> str:
    """One line: a bar of devices done out of all, and the counts by state."""
    total = len(ro.devices) or 1
    done = sum(1 for r in ro.devices.values() if r.step.done)
    filled = round(_BAR * done / total)
    counts = Counter(r.step.value for r in ro.devices.values())
    shown = " ".join(f"{s.value}={counts[s.value]}" for s in DeviceStep if counts[s.value])
    return (
        f"[{'#' * filled}{'.' * (_BAR - filled)}] {done}/{len(ro.devices)} "
        f"wave {min(ro.wave + 1, len(ro.waves))}/{len(ro.waves)} {ro.status.value}  {shown}"
    )


def table(ro: Rollout) -> str:
    """The full report as a plain-text table: waves, then devices."""
    doc = summary(ro)
    lines = [f"rollout {ro.id}: {ro.label} -> group {ro.group}: {ro.status.value}",
             f"plan: {doc['plan']}"]  # fmt: skip
    if ro.halted_reason:
        lines.append(f"halted: {ro.halted_reason}")
    lines.append(f"{'WAVE':<6}{'SIZE':>6}{'FAILED':>8}{'SECONDS':>10}  STATES")
    for w in doc["waves"]:
        secs = f"{w['seconds']:.1f}" if w["seconds"] is not None else "-"
        states = " ".join(f"{k}={v}" for k, v in w["counts"].items())
        lines.append(f"{w['wave']:<6}{w['size']:>6}{w['failures']:>8}{secs:>10}  {states}")
    width = max([len("DEVICE"), *map(len, doc["devices"])]) + 2
    lines.append(f"{'DEVICE':<{width}}{'WAVE':>5}  {'STATE':<12}{'SECONDS':>9}  REASON")
    for name, d in doc["devices"].items():
        secs = f"{d['seconds']:.1f}" if d["seconds"] is not None else "-"
        lines.append(f"{name:<{width}}{d['wave']:>5}  {d['state']:<12}{secs:>9}  {d['reason']}")
    for name, why in doc["left_out"].items():
        lines.append(f"{name:<{width}}{'-':>5}  {'left out':<12}{'-':>9}  {why}")
    return "\n".join(lines)
