"""check-config reports every problem in a file, and fails on a config `run` refuses."""

from __future__ import annotations

import pytest

from edge_agent.cli import main
from edge_agent.config import load_config, parse_config
from edge_agent.daemon.preflight import check_startup
from edge_agent.daemon.startup import initial_model
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


def test_a_config_without_a_model_fails_as_run_would(tmp_path, capsys) -> None:
    # `run` refuses to start without a model: check-config fails the same way, never OK.
    path = tmp_path / "c.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path}/state"\n')
    config = load_config(path, env={})
    with pytest.raises(ConfigError) as caught:
        check_startup(config)
    with pytest.raises(ConfigError) as run_error:
        initial_model(config, None)
    assert str(caught.value) == str(run_error.value)  # one error, shared with run
    assert caught.value.key == "model.path"
    for args in (["check-config"], ["check-config", "--strict"]):
        assert main([*args, str(path)]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err == (
            f"error: {path}: model.path: no model configured and no release installed in "
            f"{tmp_path}/state/models; set model.path\n"
        )


def test_a_missing_model_file_fails_naming_the_file_and_key(tmp_path, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[model]\npath = "nope.tflite"\n')
    for args in (["check-config"], ["check-config", "--strict"]):
        assert main([*args, str(path)]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        model = tmp_path / "nope.tflite"  # relative to the config's directory
        assert err == (
            f"error: {path}: model.path: {model}: cannot read model: No such file or directory\n"
        )


def test_an_installed_release_makes_a_missing_model_a_warning(tmp_path, capsys) -> None:
    # run starts the release; model.path is only its fallback.
    (tmp_path / "state" / "models" / "m-1").mkdir(parents=True)
    path = tmp_path / "c.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path}/state"\n[updates]\nenabled = true\n')
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr() == (f"{path}: OK\n", "")
    with path.open("a") as f:
        f.write('[model]\npath = "nope.tflite"\n')
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: OK\n"
    assert err.startswith(f"warning: {path}: model.path: {tmp_path / 'nope.tflite'}: cannot read")
    assert err.endswith(f"(run starts the release installed in {tmp_path}/state/models first)\n")
    assert main(["check-config", "--strict", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.endswith(f"error: {path}: 1 warning(s) and --strict\n")
