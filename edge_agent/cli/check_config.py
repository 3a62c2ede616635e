"""``edge-agent check-config``: validate a config file and exit (no devices touched)."""

from __future__ import annotations

import argparse
import json
import sys

from edge_agent.config import DEFAULT_CONFIG_PATH, check_config
from edge_agent.errors import ConfigError, ConfigErrors


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("file", nargs="?", default=DEFAULT_CONFIG_PATH)
    p.add_argument(
        "--print", action="store_true", help="print the effective settings as JSON, secrets masked"
    )
    p.add_argument("--strict", action="store_true", help="also exit 1 when there are warnings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when valid (warnings on stderr), 1 on an error (or a warning with --strict)."""
    try:
        config = check_config(args.file)
    except ConfigError as exc:
        for error in exc.errors if isinstance(exc, ConfigErrors) else (exc,):
            print(f"error: {error}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.print:
        print(json.dumps(config.redacted_dict(), indent=2))
    else:
        print(f"{args.file}: OK")
    return 1 if args.strict and config.warnings else 0
