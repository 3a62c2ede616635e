"""The ``edge-agent`` command line: argument parsing and dispatch only.

Each subcommand lives in its own module here and calls into the library; errors from
the library (:class:`EdgeAgentError`) become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from edge_agent import __version__
from edge_agent.errors import EdgeAgentError

# What a shell reports for a command killed by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 128 + int(signal.SIGPIPE)

# What writing the output can fail with (a full disk or quota, a file too big, a dead
# device): one error line, not a traceback.
_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})

# Subcommand modules: each exposes add_parser(subparsers) and sets func=run(args) -> int.
_COMMANDS = ("run", "infer", "check-config", "model", "demo", "doctor", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Coral Edge TPU inference daemon: camera -> TFLite -> MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        type=_log_level,
        help="DEBUG, INFO, WARNING or ERROR (default: WARNING, "
        "or the config's logging.level for run)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import importlib

    for name in _COMMANDS:
        importlib.import_module(f"edge_agent.cli.{name.replace('-', '_')}").add_parser(sub)
    return parser


def _log_level(text: str) -> str:
    """argparse type: a level the config's ``logging.level`` takes (any case), upper-case."""
    from edge_agent.config.checks import Invalid
    from edge_agent.config.loader import field_check
    from edge_agent.config.schema import LoggingConfig

    try:
        return field_check(LoggingConfig, "level")(text)
    except Invalid as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc


def checked(check: Callable[[str], Any]) -> Callable[[str], str]:
    """argparse type: the text, once the library's ``check`` accepts it; the check's
    ValueError becomes a usage error naming the option (exit 2), not a traceback."""

    def convert(text: str) -> str:
        try:
            check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
        return text

    return convert


def config_type(check: Any, parse: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """argparse type: ``parse`` the text, then apply a config check (a
    :mod:`~edge_agent.config.checks` check such as ``Seconds``), so the option accepts
    exactly what the config file does and ``nan`` or ``-1`` is a usage error, not a
    traceback, an abort or a wait that never ends."""
    from edge_agent.config.checks import Invalid

    def convert(text: str) -> Any:
        try:
            return check(parse(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected {check.expected}, got {text}") from exc
        except Invalid as exc:
            # Name the R,G,B position only when several values were given.
            where = f" (value {exc.subkey})" if exc.subkey and "," in text else ""
            raise argparse.ArgumentTypeError(exc.message + where) from exc

    return convert


def setup_logging(level: str | None, default: str = "WARNING") -> None:
    """Log to stderr (journald picks it up under systemd)."""
    logging.basicConfig(
        level=getattr(logging, (level or default).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-agent`` console script.

    Returns:
        The process exit code; 141 (``EXIT_BROKEN_PIPE``) when the reader of stdout went
        away (``| head -1``), without a traceback.
    """
    try:
        # Building the parser imports every subcommand (numpy, OpenCV): a Ctrl-C typed
        # right after the command lands here, and must not print a traceback either.
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        return 130
    if args.command != "run":
        setup_logging(args.log_level)
        if sys.stdout is None:  # fd 1 closed (`>&-`): print() would drop every result
            print(
                f"edge-agent {args.command}: error: stdout is closed: nowhere to write the output",
                file=sys.stderr,
            )
            return 2
    try:
        code = int(args.func(args) or 0)
        if sys.stdout is not None:
            sys.stdout.flush()  # a failed write shows here, not as a warning at exit
        return code
    except EdgeAgentError as exc:
        print(f"edge-agent {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `edge-agent infer clip.avi | head -1`: the reader is gone. Stop quietly, as a
        # C tool killed by SIGPIPE would, without "Exception ignored ... BrokenPipeError".
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        # `edge-agent infer clip.avi > results.jsonl` on a full disk: one line, exit 1.
        print(f"edge-agent {args.command}: error: cannot write: {exc.strerror}", file=sys.stderr)
        _discard_stdout()
        return 1


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the flush at interpreter exit does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
