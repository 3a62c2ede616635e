"""The entry point: Ctrl-C while the command line is still being parsed (its imports take
a while), and the options every command takes."""

from __future__ import annotations

import signal

import pytest

import edge_agent.cli as cli


def test_ctrl_c_while_the_parser_is_built_exits_130_without_a_traceback(monkeypatch):
    real = cli.build_parser

    def interrupted_build():
        signal.raise_signal(signal.SIGINT)  # as the user's Ctrl-C arrives mid-import
        return real()

    monkeypatch.setattr(cli, "build_parser", interrupted_build)
    try:
        code = cli.main(["--log-level", "ERROR", "check-config", "/nonexistent.toml"])
    except KeyboardInterrupt:  # what python -m prints as a traceback
        pytest.fail("KeyboardInterrupt escaped edge_agent.cli.main")
    assert code == 130


def test_an_unknown_log_level_is_a_usage_error(capsys):
    # "--log-level DEUBG" silently logged at WARNING; the config's logging.level refuses it.
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["--log-level", "DEUBG", "check-config"])
    assert info.value.code == 2
    assert "argument --log-level: expected one of" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["--log-level", "debug", "check-config"])
    assert args.log_level == "DEBUG"
