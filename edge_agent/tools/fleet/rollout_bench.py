"""``tools/fleet_bench.py --rollout``: staged rollouts over N simulated devices.

For each fleet size: a fresh mosquitto, the signed demo release served by the lab
server, N simulated agents, then ``model rollout start`` (the Python API) with the plan
``1,5%,25%,100%`` and a 5 % threshold, driven to its end by the rollout runner. Twice:
with no device rigged (time from start to the rollout completed, every device active)
and with 10 % rigged to fail the health check (the wave it halts in, and the devices
touched against the plan's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

from edge_agent.publishing.settings import MqttSettings
from edge_agent.tools.fleet.bench import GROUP, demo_fleet, make_release
from edge_agent.tools.fleet.fleet import Fleet
from edge_agent.tools.fleet.load import BenchBroker
from edge_agent.tools.release.lab_server import LabServer
from edge_agent.tools.release.rollout.plan import Plan
from edge_agent.tools.release.rollout.report import summary
from edge_agent.tools.release.rollout.runner import Runner, start
from edge_agent.tools.release.rollout.store import RolloutStore
from edge_agent.updates.manifest import MANIFEST_FILE, parse_manifest
from edge_agent.updates.signing import load_envelope, parse_envelope

WAVES, THRESHOLD = "1,5%,25%,100%", "5%"


class RolloutRow(NamedTuple):
    """One staged rollout's figures."""

    size: int
    rigged: int
    status: str
    waves: list[int]  # planned wave sizes
    rigged_per_wave: list[int]
    halted_wave: int | None  # 1-based; None when it completed
    touched: int  # devices that were sent the command
    active: int
    seconds: float  # from start() to the rollout's end
    wave_seconds: list[float | None]


ROLLOUT_HEADER = (
    "| devices | rigged | plan waves | rigged per wave | status | halted in wave "
    "| devices touched / planned | active at the end | start->end s | per wave s |"
)


def format_rollout_row(r: RolloutRow) -> str:
    """A markdown table row."""
    waves = "/".join(str(n) for n in r.waves)
    per_wave = " / ".join("-" if s is None else f"{s:.1f}" for s in r.wave_seconds)
    halted = "-" if r.halted_wave is None else str(r.halted_wave)
    return (
        f"| {r.size} | {r.rigged} | {waves} | {'/'.join(map(str, r.rigged_per_wave))} "
        f"| {r.status} | {halted} | {r.touched} / {r.size} "
        f"| {r.active} | {r.seconds:.1f} | {per_wave} |"
    )


def _serve(release: Path) -> LabServer:
    """The lab server for a packed release (its manifest says which files)."""
    envelope = load_envelope((release / MANIFEST_FILE).read_bytes())
    files = [f.name for f in parse_manifest(parse_envelope(envelope).manifest).files]
    return LabServer(release, files, host="127.0.0.1", port=0, timeout=900).start()


def run_rollout(size: int, processes: int, work: Path, timeout: float, rigged: float) -> RolloutRow:
    """One staged rollout over a fresh fleet, start to stop."""
    release, public = make_release(work)
    broker = BenchBroker(work / "broker").start()
    server = _serve(release)
    fleet = None
    try:
        settings = demo_fleet(size, work / "agents", public, broker.host, broker.port,
                              processes=processes, rigged=rigged, seed=14)  # fmt: skip
        fleet = Fleet(settings).start(timeout)
        mqtt = MqttSettings(host=broker.host, port=broker.port, connect_timeout=10.0)
        store = RolloutStore(work / "ops")
        plan = Plan.parse(WAVES, THRESHOLD, device_timeout=timeout)
        t0 = time.monotonic()
        ro = start(release, group=GROUP, plan=plan, broker=mqtt, prefix=settings.prefix,
                   base_url=server.url, store=store, discover_seconds=3.0)  # fmt: skip
        final = Runner(store, ro.id, mqtt).run()
        seconds = time.monotonic() - t0
        doc = summary(final)
        halted = None
        if final.halted_reason.startswith("wave "):
            halted = int(final.halted_reason.split()[1].rstrip(":"))
        active = sum(1 for d in doc["devices"].values() if d["state"] == "active")
        return RolloutRow(
            size, len(fleet.rigged), doc["status"], [w["size"] for w in doc["waves"]],
            [len(fleet.rigged & set(w)) for w in final.waves], halted,
            doc["touched"], active, seconds, [w["seconds"] for w in doc["waves"]],
        )  # fmt: skip
    finally:
        if fleet is not None:
            fleet.stop()
        server.stop()
        broker.stop()
