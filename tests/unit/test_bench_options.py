"""Tier 1: ``edge-agent bench`` refuses options it cannot honour before it runs anything."""

from __future__ import annotations

import math

import pytest

from edge_agent.cli import main
from edge_agent.errors import ConfigError
from edge_agent.tools.bench.runner import MAX_FRAMES, BenchOptions, run_bench

MODEL = "/nonexistent/model.tflite"  # the bounds are checked before the model is looked at


@pytest.mark.parametrize(
    "change",
    [
        {"frames": 1},
        {"frames": MAX_FRAMES + 1},
        {"warmup": 0},
        {"warmup": 10**12},
        {"rounds": 0},
        {"rounds": 101},
        {"pace_frames": -1},
        {"pace_frames": MAX_FRAMES + 1},
        {"objects": -1},
        {"cold_starts": -1},
        {"cameras": 0},
        {"cameras": 17},
        {"sim_tpu_ms": -1.0},
        {"sim_tpu_ms": math.nan},
        {"sim_tpu_ms": 1e9},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
def test_options_out_of_bounds_are_a_config_error_naming_the_bounds(change):
    with pytest.raises(ConfigError, match="bench needs"):
        run_bench(BenchOptions(MODEL)._replace(**change))


def test_options_within_bounds_get_as_far_as_the_model():
    fine = BenchOptions(MODEL, frames=MAX_FRAMES, warmup=1, rounds=100, sim_tpu_ms=1000.0)
    with pytest.raises(ConfigError, match="no such model file"):
        run_bench(fine)


def test_the_cli_reports_it_as_a_usage_problem_not_a_traceback(capsys):
    assert main(["bench", "--model", MODEL, "--frames", "1000000000"]) == 2
    err = capsys.readouterr().err
    assert "bench needs" in err and "Traceback" not in err
