"""``edge-agent doctor``'s time limits are checked as the config's durations are."""

from __future__ import annotations

import pytest

from edge_agent.cli import build_parser


@pytest.mark.parametrize("option", ["--timeout", "--model-timeout"])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "expected number > 0 and <= 31536000, got -1.0"),
        ("0", "expected number > 0 and <= 31536000, got 0.0"),
        ("nan", "expected number > 0 and <= 31536000, got nan"),
        ("1e300", "expected number > 0 and <= 31536000, got 1e+300"),
        ("soon", "expected number > 0 and <= 31536000, got soon"),
    ],
)
def test_a_time_limit_that_no_timeout_takes_is_a_usage_error(capsys, option, text, message):
    # These reached socket and thread timeouts: a traceback mid-report, or for nan an
    # abort of the interpreter ("FATAL: exception not rethrown", exit 134).
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["doctor", option, text])
    assert info.value.code == 2
    assert f"argument {option}: {message}" in capsys.readouterr().err


def test_time_limits_take_seconds():
    args = build_parser().parse_args(["doctor", "--timeout", "2.5", "--model-timeout", "90"])
    assert (args.timeout, args.model_timeout) == (2.5, 90.0)
    defaults = build_parser().parse_args(["doctor"])
    assert (defaults.timeout, defaults.model_timeout) == (5.0, 60.0)
