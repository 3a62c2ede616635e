"""``edge-agent check-config``: validate a config file and exit (no devices touched).

The config is loaded as ``run`` loads it, then the model ``run`` would start is checked
by the same code ``run`` uses (:func:`edge_agent.daemon.preflight.check_startup`), so a
config that ``run`` would refuse at start fails here too.
"""

from __future__ import annotations

import argparse
import json
import sys

from edge_agent.config import DEFAULT_CONFIG_PATH, config_path_from_env, load_config
from edge_agent.errors import ConfigError, ConfigErrors


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument(
        "file",
        nargs="?",
        default=config_path_from_env(),
        help=f"config file (default: $EDGE_AGENT_CONFIG or {DEFAULT_CONFIG_PATH}, as run)",
    )
    p.add_argument(
        "--print", action="store_true", help="print the effective settings as JSON, secrets masked"
    )
    p.add_argument("--strict", action="store_true", help="also exit 1 when there are warnings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when valid (warnings on stderr), 1 on an error (or a warning with --strict).

    ``FILE: OK`` is printed only with exit status 0.
    """
    from edge_agent.daemon.preflight import check_startup
    from edge_agent.inference.codec import describe_codec, describe_text

    try:
        config = load_config(args.file)
        startup = check_startup(config)
    except ConfigError as exc:
        for error in exc.errors if isinstance(exc, ConfigErrors) else (exc,):
            print(f"error: {error}", file=sys.stderr)
        return 1
    warnings = [*config.warnings, *startup.warnings]
    if startup.codec is not None:
        described = describe_codec(startup.codec)
        if not args.print:
            print(f"model {startup.options.path}: {describe_text(described)}")
        warnings += [f"model {startup.options.path}: {w}" for w in described["warnings"]]
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.print:
        print(json.dumps(config.redacted_dict(), indent=2))
    if args.strict and warnings:
        print(f"error: {args.file}: {len(warnings)} warning(s) and --strict", file=sys.stderr)
        return 1
    if not args.print:
        print(f"{args.file}: OK")
    return 0
