"""Benchmark: time from ``model push --group`` to every simulated device ``active``.

For each fleet size a fresh mosquitto, N simulated agents (the daemon's own update
path, see edge_agent/tools/fleet/) and a push of the signed demo model served by the
lab server; prints one markdown row per size. ``make fleet-bench`` runs it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.tools.fleet.bench import HEADER, format_row, run_size  # noqa: E402
from edge_agent.tools.fleet.rollout_bench import (  # noqa: E402
    ROLLOUT_HEADER,
    format_rollout_row,
    run_rollout,
)


def main(argv: list[str] | None = None) -> int:
    """Run the sizes and print the table; 1 when any device did not end ``active``."""
    ap = argparse.ArgumentParser(prog="tools/fleet_bench.py", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="50,100,200", help="comma-separated fleet sizes")
    ap.add_argument("--processes", type=int, default=4, help="shard processes per fleet")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds the push may take")
    ap.add_argument(
        "--rollout",
        action="store_true",
        help="staged rollouts (1,5%%,25%%,100%%, 5%% threshold): clean, then 10%% rigged",
    )
    ap.add_argument(
        "--rabbitmq",
        action="store_true",
        help="through a 2-node RabbitMQ cluster started here: devices on A, push on B",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.rollout:
        return rollouts(args)
    if args.rabbitmq:
        return through_cluster(args)
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    failed = False
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"fleet-{size}-") as tmp:
            row = run_size(size, args.processes, Path(tmp), args.timeout)
        failed = failed or row.not_active > 0
        print(format_row(row), flush=True)
    return 1 if failed else 0


def rollouts(args: argparse.Namespace) -> int:
    """The staged-rollout table; 1 when a clean rollout did not complete."""
    print(ROLLOUT_HEADER)
    print("|" + "---|" * (ROLLOUT_HEADER.count("|") - 1))
    failed = False
    for size in (int(s) for s in args.sizes.split(",")):
        for rigged in (0.0, 0.1):
            with tempfile.TemporaryDirectory(prefix=f"rollout-{size}-") as tmp:
                row = run_rollout(size, args.processes, Path(tmp), args.timeout, rigged)
            failed = failed or (rigged == 0.0 and row.status != "completed")
            print(format_rollout_row(row), flush=True)
    return 1 if failed else 0


def through_cluster(args: argparse.Namespace) -> int:
    """Group pushes through the RabbitMQ cluster; 1 when a device did not end active."""
    from edge_agent.tools.fleet.rabbit import (
        CLUSTER_HEADER,
        RabbitCluster,
        format_cluster_row,
        run_cluster_size,
        unavailable,
    )

    why = unavailable()
    if why:
        print(f"fleet_bench: {why}", file=sys.stderr)
        return 1
    failed = False
    with tempfile.TemporaryDirectory(prefix="fleet-rabbit-") as tmp:
        cluster = RabbitCluster(Path(tmp) / "cluster")
        try:
            print(f"cluster up in {cluster.start():.1f} s", file=sys.stderr)
            print(CLUSTER_HEADER)
            print("|" + "---|" * (CLUSTER_HEADER.count("|") - 1))
            for size in (int(s) for s in args.sizes.split(",")):
                work = Path(tmp) / f"size-{size}"
                work.mkdir()
                row = run_cluster_size(cluster, size, args.processes, work, args.timeout)
                failed = failed or row.not_active > 0
                print(format_cluster_row(row), flush=True)
        finally:
            cluster.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
