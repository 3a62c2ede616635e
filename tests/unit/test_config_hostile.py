"""Hostile config files: each gives one ConfigError naming the file, never a crash."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, load_config, parse_config


@pytest.mark.parametrize(
    "value", ["[" * 5000 + "]" * 5000, "{a = " * 5000 + "1" + "}" * 5000], ids=["array", "table"]
)
def test_deeply_nested_value_is_a_config_error(tmp_path, value):
    # The TOML parser recursed until RecursionError, which no caller catches: a SIGHUP
    # after such a file was written killed the running daemon.
    path = tmp_path / "config.toml"
    path.write_text(f"x = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: arrays or inline tables nested too deeply"
    assert isinstance(info.value.__cause__, RecursionError)


def test_nesting_a_parser_accepts_is_still_checked_key_by_key():
    with pytest.raises(ConfigError) as info:
        parse_config("[model]\nthreshold = " + "[" * 50 + "]" * 50 + "\n", "c.toml", env={})
    assert str(info.value).startswith("c.toml: model.threshold: expected number 0..1, got [[")
