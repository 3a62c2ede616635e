"""``edge-agent doctor``: check this box and a config file; print a report."""

from __future__ import annotations

import argparse
import json
import os

from edge_agent.cli import config_type
from edge_agent.config import DEFAULT_CONFIG_PATH
from edge_agent.config.checks import Seconds

# Seconds as the config takes them (finite, > 0, at most a year), so ``--timeout nan``
# is a usage error, not a traceback (or an abort) mid-report.
_seconds = config_type(Seconds(gt=0))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "doctor",
        help="check runtimes, Edge TPUs, permissions, cameras, model, broker and state",
        description="Check that this machine can run the daemon with a config, and say "
        "what is wrong. Exit 0 when nothing failed (warnings allowed), 1 otherwise.",
    )
    p.add_argument(
        "--config",
        default=None,
        help=f"config file (default: $EDGE_AGENT_CONFIG or {DEFAULT_CONFIG_PATH}; "
        "config checks are skipped when the default file does not exist)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        help="seconds for each camera's first frame and for the broker (default 5)",
    )
    p.add_argument(
        "--model-timeout",
        type=_seconds,
        default=60.0,
        help="seconds for loading the model and one inference (default 60)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run every check; exit 1 if any failed."""
    from edge_agent.tools.doctor.report import Doctor

    doctor = Doctor(
        args.config,
        explicit=args.config is not None or bool(os.environ.get("EDGE_AGENT_CONFIG")),
        timeout=args.timeout,
        model_timeout=args.model_timeout,
    )
    report = doctor.run()
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print(report.format_text())
    return 0 if report.ok else 1
