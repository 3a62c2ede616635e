"""``edge-agent demo``: the daemon on the bundled model and clip, its output shown live."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "demo",
        help="run the real daemon on the bundled model and clip and print what it publishes",
        description="Run `edge-agent run` on the bundled colour-blob detector with the "
        "bundled clip as its camera, publishing to localhost:1883 when a broker answers "
        "there, else to an embedded broker, and print every result and stats message. "
        "No camera, Edge TPU, network or root needed. Ctrl-C stops it.",
    )
    p.add_argument("--seconds", type=float, default=None, metavar="N", help="stop after N seconds")
    p.add_argument(
        "--broker", metavar="HOST:PORT", help="publish to this broker (default: localhost:1883 "
        "when it answers, else an embedded one)",
    )  # fmt: skip
    p.add_argument("--model", help="run this model instead of the bundled one")
    p.add_argument("--labels", help="labels file for --model")
    p.add_argument(
        "--source", help="camera source instead of the bundled clip: a file, an index "
        "(0 = /dev/video0), a device path, an rtsp:// URL or 'synthetic'",
    )  # fmt: skip
    p.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (config, log, state)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C or --seconds.

    Returns:
        0 after a clean stop, 1 when the daemon failed or published nothing.
    """
    from edge_agent.tools.demo.app import Demo, DemoOptions

    if args.seconds is not None and not args.seconds > 0:
        print("edge-agent demo: error: --seconds must be > 0", file=sys.stderr)
        return 2
    options = DemoOptions(
        seconds=args.seconds,
        broker=args.broker,
        model=args.model,
        labels=args.labels,
        source=args.source,
        keep=args.keep,
        log_level=args.log_level or "WARNING",
    )
    return Demo(options, sys.stdout, sys.stderr).run()
