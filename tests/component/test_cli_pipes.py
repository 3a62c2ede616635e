"""Tier 2: a CLI whose stdout reader went away (``| head -1``) stops quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_agent.cli import EXIT_BROKEN_PIPE
from tests.support.daemon import daemon_environment
from tests.support.paths import REPO, fixture_model


def test_output_into_a_closed_pipe_exits_141_without_a_traceback(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'[device]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[model]\npath = "{fixture_model("color_uint8.tflite")}"\n'
    )
    read_end, write_end = os.pipe()
    os.close(read_end)  # before the child writes anything: its first write gets EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent", "check-config", "--print", str(config)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=daemon_environment(),
            cwd=REPO,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    err = done.stderr.decode()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert done.returncode == EXIT_BROKEN_PIPE == 141, err


@pytest.mark.parametrize("command", ["infer", "check-config"])
def test_output_onto_a_full_disk_is_one_error_line_and_exit_1(command, tmp_path):
    # /dev/full fails every write with ENOSPC, as a full disk under `> results.jsonl` does.
    model = str(fixture_model("color_uint8.tflite"))
    config = tmp_path / "c.toml"
    config.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n[model]\npath = "{model}"\n')
    args = {
        "infer": ["infer", "--model", model, str(REPO / "models/demo/clip.avi")],
        "check-config": ["check-config", "--print", str(config)],
    }[command]
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent", *args],
            stdout=full, stderr=subprocess.PIPE, env=daemon_environment(), cwd=REPO,
            timeout=120, check=False,
        )  # fmt: skip
    err = done.stderr.decode()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.splitlines() == [
        f"edge-agent {command}: error: cannot write: No space left on device"
    ]
    assert done.returncode == 1


def test_a_closed_stdout_is_an_error_not_a_silent_success():
    # `edge-agent infer clip.avi >&-`: Python sets sys.stdout to None and print() drops
    # every line, so the results went nowhere and the exit status said all was well.
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "infer", "--model",
         str(fixture_model("color_uint8.tflite")), str(REPO / "models/demo/clip.avi")],
        stderr=subprocess.PIPE, env=daemon_environment(), cwd=REPO, timeout=120,
        check=False, preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert done.stderr.decode().splitlines() == [
        "edge-agent infer: error: stdout is closed: nowhere to write the output"
    ]
    assert done.returncode == 2
