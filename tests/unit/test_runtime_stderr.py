"""Tier 1: the runtimes' native stderr chatter is dropped, everything else is kept."""

import os

import pytest

from edge_agent.inference.runtime import capture_stderr, quiet_runtime_stderr


def test_chatter_dropped_other_lines_replayed(capfd):
    with quiet_runtime_stderr():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"2026-01-01 WARNING edge_agent.x: model m: kept\n")
        os.write(2, b"WARNING: some runtime warning\n")
    err = capfd.readouterr().err
    assert err == "2026-01-01 WARNING edge_agent.x: model m: kept\n"


def test_lines_are_replayed_when_the_block_raises(capfd):
    with pytest.raises(RuntimeError), quiet_runtime_stderr():
        os.write(2, b"ERROR: runtime text also in the exception\nown line\n")
        raise RuntimeError("boom")
    assert capfd.readouterr().err == "own line\n"


def test_capture_returns_the_lines():
    with capture_stderr() as lines:
        os.write(2, b"Premature end of JPEG file\n")
    assert lines == [b"Premature end of JPEG file\n"]
