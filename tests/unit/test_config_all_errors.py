"""check-config reports every problem in a file, and warns about a config `run` refuses."""

from __future__ import annotations

import pytest

from edge_agent.cli import main
from edge_agent.config import check_config, parse_config
from edge_agent.errors import ConfigError, ConfigErrors

TYPO_AND_TYPE = """
[mqtt]
hots = "broker"
port = "abc"

[[camera]]
source = 0
fps = "fast"

[model]
path = "/m.tflite"
"""


def test_every_error_is_reported_each_naming_its_key() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_config(TYPO_AND_TYPE, "c.toml")
    keys = [error.key for error in caught.value.errors]
    assert keys == ["mqtt.hots", "mqtt.port", "camera[0].fps"]
    lines = str(caught.value).splitlines()
    assert len(lines) == 3 and all(line.startswith("c.toml: ") for line in lines)
    assert 'did you mean "hosts"' in lines[0]


def test_one_error_stays_a_plain_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('[mqtt]\nport = "abc"\n', "c.toml")
    assert not isinstance(caught.value, ConfigErrors)
    assert caught.value.key == "mqtt.port"


def test_cli_prints_one_line_per_error(tmp_path, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text(TYPO_AND_TYPE)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in err] == ["mqtt.hots", "mqtt.port", "camera[0].fps"]
    assert all(line.startswith(f"error: {path}: ") for line in err)


def test_a_config_without_a_model_warns(tmp_path, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path}/state"\n')
    config = check_config(path)
    assert any("model.path: no model configured" in w for w in config.warnings)
    assert main(["check-config", str(path)]) == 0
    assert "model.path" in capsys.readouterr().err
    assert main(["check-config", "--strict", str(path)]) == 1


def test_a_config_with_a_model_does_not_warn_about_it(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[model]\npath = "/m.tflite"\n')
    assert not any("model.path" in w for w in check_config(path).warnings)
