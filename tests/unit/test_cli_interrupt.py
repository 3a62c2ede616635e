"""Ctrl-C while the command line is still being parsed (its imports take a while)."""

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
