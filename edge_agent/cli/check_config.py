"""``edge-agent check-config``: validate a config file and exit (no devices touched)."""

from __future__ import annotations

import argparse
import json
import os
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
    model_warnings = _model_report(config, quiet=args.print)
    if args.print:
        print(json.dumps(config.redacted_dict(), indent=2))
    else:
        print(f"{args.file}: OK")
    return 1 if args.strict and (config.warnings or model_warnings) else 0


def _model_report(config, *, quiet: bool) -> list[str]:
    """Say what the configured model will get (task, normalization, labels), read from
    the file without running it; returns the warnings (also printed on stderr)."""
    from edge_agent.daemon.app import model_options
    from edge_agent.errors import ModelError
    from edge_agent.inference.codec import describe_model, describe_text

    options = model_options(config)
    if not options.path or not os.path.isfile(options.path):
        return []  # no model configured, or the file is checked elsewhere
    try:
        described = describe_model(options)
    except (ModelError, ValueError) as exc:
        warnings = [f"model: {exc}"]
    else:
        if not quiet:
            print(f"model {options.path}: {describe_text(described)}")
        warnings = [f"model {options.path}: {w}" for w in described["warnings"]]
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return warnings
