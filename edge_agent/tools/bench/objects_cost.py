"""The object layer's cost on the frame path: tracker + zones, and the whole layer.

A deterministic scene of N objects (default 20) moving at constant speeds with a little
jitter, some leaving and others entering, in a 640x480 frame with two polygon zones,
runs through the daemon's own classes: :class:`~edge_agent.tracking.tracker.Tracker` and
:class:`~edge_agent.tracking.zones.ZoneMembership` (what P12 measures), then
:class:`~edge_agent.daemon.objects.ObjectService` (tracks, zones, events, counts and
their messages, publishing into a no-op). Snapshots are off: their frame copy happens
only when a best score improves and their encoding is on a thread of its own.

Time is this thread's CPU (``time.thread_time``), per frame; medians over rounds.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from edge_agent.config.loader import parse_config
from edge_agent.daemon.objects import ObjectService, tracker_settings, zone_of
from edge_agent.inference.postprocess import Result
from edge_agent.publishing.topics import Topics
from edge_agent.tracking.tracker import Detection, Tracker, TrackerStep
from edge_agent.tracking.zones import Zone, ZoneMembership, scaled

OBJECTS_MAX_MS = 0.2  # P12: tracker + 2 zones for 20 objects, per frame
W, H = 640, 480
FPS = 15.0
LABELS = ("person", "car", "dog", "bicycle")
CONFIG = """
[events]
labels = ["person", "car"]
snapshots = false

[[zone]]
name = "drive"
camera = "cam0"
points = [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]]

[[zone]]
name = "door"
camera = "cam0"
points = [[0.55, 0.1], [0.95, 0.1], [0.95, 0.9], [0.7, 0.95], [0.55, 0.6]]
"""


def scene(objects: int, frames: int, seed: int = 7) -> list[list[Result]]:
    """Per frame the detections of ``objects`` moving boxes; every 4th object leaves the
    view for a stretch and comes back, so tracks end and start during the run."""
    rng = np.random.default_rng(seed)
    start = rng.uniform((20, 20), (W - 80, H - 80), (objects, 2))
    speed = rng.uniform(-60, 60, (objects, 2))  # px per second
    size = rng.uniform(30, 70, (objects, 2))
    out = []
    for f in range(frames):
        t = f / FPS
        dets = []
        for i in range(objects):
            if i % 4 == 3 and (f // 45) % 2 == 1:
                continue  # gone for 3 s, back for 3 s
            # Bounce inside the frame; a pixel of jitter, as a detector's boxes have.
            x = _bounce(start[i, 0] + speed[i, 0] * t, W - size[i, 0]) + rng.normal(0, 1)
            y = _bounce(start[i, 1] + speed[i, 1] * t, H - size[i, 1]) + rng.normal(0, 1)
            box = (float(x), float(y), float(x + size[i, 0]), float(y + size[i, 1]))
            dets.append(
                Result(i % len(LABELS), LABELS[i % len(LABELS)], 0.6 + 0.3 * (i % 3) / 2, box)
            )
        out.append(dets)
    return out


def _bounce(v: float, hi: float) -> float:
    """``v`` folded into [0, hi] (a ball bouncing off the frame's edges)."""
    period = 2 * hi
    v = math.fmod(abs(v), period)
    return period - v if v > hi else v


def _per_frame(
    step: Callable[[int], Any], frames: int, after: Callable[[Any], None] = lambda _: None
) -> tuple[list[float], float]:
    """CPU ms of each call of ``step(i)``, and their mean; ``after(result)`` (the bench's
    own bookkeeping) runs untimed."""
    times = []
    for i in range(frames):
        t0 = time.thread_time()
        result = step(i)
        times.append((time.thread_time() - t0) * 1000.0)
        after(result)
    return times, sum(times) / frames


def _quantiles(times: Sequence[float], mean: float) -> dict[str, float]:
    p50, p99 = np.percentile(times, (50, 99))
    return {"p50": float(p50), "p99": float(p99), "cpu_mean": mean}


def measure_objects(objects: int = 20, frames: int = 300, rounds: int = 3) -> dict[str, Any]:
    """The object layer's CPU per frame; medians over ``rounds``.

    Returns:
        ``{"objects", "zones", "frames", "rounds", "tracker_zones_ms": {p50, p99,
        cpu_mean}, "layer_ms": {...}, "tracks": tracks started, "in_zone": (track,
        frame) pairs inside a zone, "events": events emitted}`` (the last three from the
        last round: they show the workload exercised every part).
    """
    config = parse_config(CONFIG)
    dets = scene(objects, frames)
    rule_zones = list(config.zone)
    runs: dict[str, list[dict[str, float]]] = {"tracker_zones_ms": [], "layer_ms": []}
    for r in range(rounds):
        core = _Core(config, dets, [_zone_px(z) for z in rule_zones])
        runs["tracker_zones_ms"].append(_quantiles(*_per_frame(core.step, frames, core.count)))
        service = ObjectService(config, Topics("edge-agent", "bench"), lambda *a: None)
        epoch = 1.0e9 + r * 1000.0
        layer = partial(_layer_step, service, dets, epoch)
        runs["layer_ms"].append(_quantiles(*_per_frame(layer, frames)))
        service.close()
    return {
        "objects": objects,
        "zones": len(rule_zones),
        "frames": frames,
        "rounds": rounds,
        **{
            name: {q: statistics.median(run[q] for run in values) for q in values[0]}
            for name, values in runs.items()
        },
        "tracks": core.tracks,
        "in_zone": core.in_zone,
        "events": service.events,
    }


class _Core:
    """Tracker + zones over the scene, one frame per call (what P12 measures)."""

    def __init__(self, config: Any, dets: list[list[Result]], zones: list[Zone]):
        self.tracker = Tracker(tracker_settings(config))
        self.members = ZoneMembership(zones)
        self.dets = dets
        self.tracks = 0  # tracks started
        self.in_zone = 0  # (track, frame) pairs inside a zone

    def step(self, i: int) -> TrackerStep:
        """What the daemon does per frame before events: associate, then zones."""
        found = [Detection(d.label, d.score, d.box) for d in self.dets[i]]
        step = self.tracker.update(found, i / FPS)
        self.members.update(step.active, step.ended)
        return step

    def count(self, step: TrackerStep) -> None:
        """Untimed: what the step exercised."""
        self.tracks += len(step.started)
        self.in_zone += sum(bool(self.members.zones_of(t.track_id)) for t in step.active)


def _layer_step(service: ObjectService, dets: list[list[Result]], epoch: float, i: int) -> None:
    """The whole layer on frame ``i``: what the daemon's pipeline calls per frame."""
    service.on_frame("cam0", epoch + i / FPS, dets[i], (W, H), False)


def _zone_px(cfg: Any) -> Zone:
    """A configured zone in the bench frame's pixels (its points are in 0..1)."""
    return scaled(zone_of(cfg), W, H)


def objects_target(measured: dict[str, Any]) -> dict[str, Any]:
    """P12: the tracker + zones' CPU per frame (mean) against the 0.2 ms limit."""
    value = measured["tracker_zones_ms"]["cpu_mean"]
    return {
        "value": value,
        "limit": OBJECTS_MAX_MS,
        "met": value <= OBJECTS_MAX_MS,
        "applies": measured["objects"] >= 20,
    }


def objects_lines(report: dict[str, Any]) -> list[str]:
    """The text report's line for the object layer (none when it was not measured)."""
    ob = report.get("objects_ms")
    if not ob:
        return []
    return [
        f"  object layer, {ob['objects']} objects: tracker + {ob['zones']} zones "
        f"{ob['tracker_zones_ms']['cpu_mean']:.3f} ms/frame CPU, with events and counts "
        f"{ob['layer_ms']['cpu_mean']:.3f} ms"
    ]
