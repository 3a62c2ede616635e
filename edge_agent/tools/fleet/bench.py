"""``make fleet-bench``: convergence of a group push over N simulated devices.

For each fleet size: a fresh mosquitto, a signed release of the demo model packed by
the operator's ``pack``, N simulated agents (:class:`~edge_agent.tools.fleet.fleet.
Fleet`), then ``push(--group)`` (the Python API behind ``edge-agent model push``) with
its built-in lab server; the time from the push call to the last device ``active``, and
the peak load of the broker and of the operator's process (push plus lab server).

    python tools/fleet_bench.py --sizes 50,100,200 --processes 4
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import NamedTuple

from edge_agent.publishing.settings import MqttSettings
from edge_agent.tools.fleet.fleet import Fleet, FleetSettings
from edge_agent.tools.fleet.load import BenchBroker, LoadSampler
from edge_agent.tools.release.operator import keygen, pack
from edge_agent.tools.release.push import ServeSettings, push

logger = logging.getLogger(__name__)

DEMO = Path(__file__).resolve().parents[3] / "models" / "demo"
MODEL_NAME = "fleet-model"
GROUP = "fleet"


class Row(NamedTuple):
    """One fleet size's figures."""

    size: int
    processes: int
    startup_s: float
    converge_s: float
    active: int
    not_active: int
    agent_rss_mib: float
    broker_cpu: float
    broker_sockets: int
    msgs_in: float
    msgs_out: float
    operator_cpu: float
    download_kib: float


HEADER = (
    "| devices | shards | start s | push->all active s | active | other | RSS/agent MiB "
    "| broker CPU% peak | broker sockets | broker msg/s in | broker msg/s out "
    "| push+lab server CPU% peak | download KiB |"
)


def format_row(r: Row) -> str:
    """A markdown table row."""
    return (
        f"| {r.size} | {r.processes} | {r.startup_s:.1f} | {r.converge_s:.1f} | {r.active} "
        f"| {r.not_active} | {r.agent_rss_mib:.1f} | {r.broker_cpu:.0f} | {r.broker_sockets} "
        f"| {r.msgs_in:.0f} | {r.msgs_out:.0f} | {r.operator_cpu:.0f} | {r.download_kib:.0f} |"
    )


def make_release(work: Path, version: str = "2") -> tuple[Path, Path]:
    """A key pair and a signed release of the demo model; (release dir, public key)."""
    private, public = work / "fleet.key", work / "fleet.pub"
    keygen(private, public)
    release = pack(
        work / "release" / version,
        name=MODEL_NAME,
        version=version,
        model=DEMO / "color_blobs.tflite",
        labels=DEMO / "labels.txt",
        private_key=private,
    )
    return release, public


def demo_fleet(
    size: int, root: Path, public: Path, host: str, port: int, *, processes: int,
    rigged: float = 0.0, seed: int = 0,
) -> FleetSettings:  # fmt: skip
    """The fleet the benches and tests run: ``size`` agents on the demo model in group
    GROUP, trusting the release key ``public``, on the broker ``host:port``."""
    return FleetSettings(
        size=size, root=root, model=DEMO / "color_blobs.tflite", labels=DEMO / "labels.txt",
        model_name=MODEL_NAME, trusted_keys=(str(public),), broker_host=host, broker_port=port,
        groups=(GROUP,), rigged_fraction=rigged, seed=seed, processes=processes,
    )  # fmt: skip


def run_size(size: int, processes: int, work: Path, timeout: float) -> Row:
    """One fleet size, start to stop."""
    release, public = make_release(work)
    download = sum(p.stat().st_size for p in release.iterdir()) / 1024.0
    broker = BenchBroker(work / "broker").start()
    fleet = None
    try:
        settings = demo_fleet(
            size, work / "agents", public, broker.host, broker.port, processes=processes
        )
        t0 = time.monotonic()
        fleet = Fleet(settings).start(timeout)
        startup = time.monotonic() - t0
        rss = (fleet.rss_mib() or 0.0) / size
        active_at: dict[str, float] = {}

        def report(device: str, state: dict) -> None:
            if state.get("state") == "active":
                active_at.setdefault(device, time.monotonic())

        mqtt = MqttSettings(host=broker.host, port=broker.port)
        with LoadSampler(broker.pid, mqtt) as load:
            t0 = time.monotonic()
            push(
                release,
                broker=mqtt,
                prefix=settings.prefix,
                group=GROUP,
                serve=ServeSettings(host="127.0.0.1", port=0),
                timeout=timeout,
                report=report,
            )
            done = time.monotonic()
        outcomes = fleet.outcomes()
        active = sum(1 for o in outcomes.values() if o.active and o.version == "2")
        last = max(active_at.values(), default=done)
        p = load.peak
        return Row(
            size, processes, startup, last - t0, active, size - active, rss, p.broker_cpu,
            p.broker_sockets, p.msgs_in, p.msgs_out, p.operator_cpu, download,
        )  # fmt: skip
    finally:
        if fleet is not None:
            fleet.stop()
        broker.stop()
