"""``edge-agent run``: the daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse
import logging

from edge_agent.config import DEFAULT_CONFIG_PATH, config_path_from_env

logger = logging.getLogger("edge_agent")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    p.add_argument(
        "--config",
        default=config_path_from_env(),
        help=f"config file (default: $EDGE_AGENT_CONFIG or {DEFAULT_CONFIG_PATH})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config (errors name the file and key), then run the daemon.

    Returns:
        0 after a clean stop, 1 when the model cannot be started, 2 on a config error.
    """
    from edge_agent.cli import setup_logging
    from edge_agent.daemon.signals import SignalQueue
    from edge_agent.heap import fix_mmap_threshold

    # First of all: a SIGHUP or SIGTERM arriving while the config and the model load is
    # queued for the main loop, instead of killing the process with the default action.
    signals = SignalQueue()
    signals.install()
    fix_mmap_threshold()  # before a model file is read: see edge_agent/heap.py
    from edge_agent.daemon.reload import read_config
    from edge_agent.errors import StopRequested

    try:
        config = read_config(args.config, signals)
    except StopRequested as exc:
        # Before READY: systemd's stop job wants the process gone, not a SIGKILL.
        signals.restore()
        logger.warning("%s", exc)
        return 0
    except BaseException:
        signals.restore()
        raise
    setup_logging(args.log_level, default=config.logging.level)
    from edge_agent.capture.sources import quiet_opencv

    quiet_opencv(debug=logging.getLogger().isEnabledFor(logging.DEBUG))
    for warning in config.warnings:
        logger.warning("%s", warning)  # each warning already names the file
    from edge_agent.daemon.app import Daemon

    return Daemon(config, args.config, signals).run()
