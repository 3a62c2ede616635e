"""Tier 2: ``check-config`` fails for what ``run`` refuses at start, by the same checks,
on the self-made fixture models (tests/fixtures/README.md); and ``model.labels_filter``
entries that are no label of the model are warned about by both."""

from __future__ import annotations

import logging

import pytest

from edge_agent.cli import main
from edge_agent.config import load_config
from edge_agent.daemon.ha_discovery import device_topics, entity_messages
from edge_agent.daemon.options import device_id, model_options
from edge_agent.daemon.startup import start_supervisor
from edge_agent.errors import ConfigError, ModelError
from tests.support.paths import fixture_model

COLOR = fixture_model("color_uint8.tflite")
LABELS = fixture_model("color_labels.txt")
METADATA = fixture_model("color_float_metadata.tflite")


def write(tmp_path, model_lines: str):
    path = tmp_path / "c.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n[model]\n{model_lines}')
    return path


def check(path, *flags: str, capsys) -> tuple[int, str, str]:
    code = main(["check-config", *flags, str(path)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("lines", "key", "message"),
    [
        (
            f'path = "{COLOR}"\nlabels = "nope.txt"\n',
            "model.labels",
            "cannot read label file {dir}/nope.txt: [Errno 2] No such file or directory",
        ),
        (
            f'path = "{COLOR}"\ntask = "detection-ssd"\n',
            "model.task",
            f"{COLOR}: model outputs (scores [1, 3] uint8) do not fit task detection-ssd",
        ),
        (
            f'path = "{fixture_model("not_a_model.tflite")}"\n',
            "model.path",
            f"{fixture_model('not_a_model.tflite')}: not a TFLite model",
        ),
        (
            # check-config said OK; run failed on its CPU backend (exit 1) after spawning
            f'path = "{COLOR}"\ncpu_model = "nope.tflite"\n',
            "model.cpu_model",
            "{dir}/nope.tflite: cannot read model",
        ),
        (
            f'path = "{COLOR}"\ncpu_model = "{fixture_model("color_uint8_edgetpu.tflite")}"\n',
            "model.cpu_model",
            f"cpu_model {fixture_model('color_uint8_edgetpu.tflite')} is itself compiled for",
        ),
    ],
    ids=["labels", "task", "not-tflite", "cpu-model-missing", "cpu-model-edgetpu"],
)
def test_what_run_refuses_fails_naming_the_config_and_the_key(
    tmp_path, capsys, lines, key, message
):
    path = write(tmp_path, lines)
    for flags in ((), ("--strict",)):
        code, out, err = check(path, *flags, capsys=capsys)
        assert (code, out) == (1, "")  # never "OK"
        assert err.startswith(f"error: {path}: {key}: {message.format(dir=tmp_path)}"), err
        assert err.count("\n") == 1
    # run's own path refuses the same model with the same message, before any worker.
    config = load_config(path, env={})
    with pytest.raises(ModelError) as caught:
        start_supervisor(config, model_options(config), {}, lambda *a: None)
    assert caught.value.key == key and err == f"error: {path}: {key}: {caught.value}\n"


def test_an_edgetpu_model_without_a_cpu_twin_needs_no_tpu_to_check(tmp_path, capsys):
    # Only the box can tell whether a TPU is there: check-config reads the file.
    path = write(tmp_path, f'path = "{fixture_model("orphan_edgetpu.tflite")}"\n')
    code, out, err = check(path, "--strict", capsys=capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == f"{path}: OK"


@pytest.mark.parametrize(
    ("model", "labels", "where", "wanted"),
    [
        (COLOR, LABELS, f"labels from {LABELS}", ("bleu", "blue", "red")),
        # Its metadata names the classes crimson, lime and azure.
        (METADATA, "", "labels from its metadata", ("lme", "lime", "azure")),
    ],
    ids=["label-file", "metadata"],
)
def test_a_labels_filter_typo_is_a_warning(tmp_path, capsys, model, labels, where, wanted):
    typo, meant, right = wanted
    lines = f'path = "{model}"\nlabels = "{labels}"\nlabels_filter = ["{typo}", "{right}"]\n'
    path = write(tmp_path, lines)
    warning = (
        f'{path}: model.labels_filter: "{typo}" is not a label of the model ({where}), so it '
        f'keeps nothing; did you mean "{meant}"?'
    )
    code, out, err = check(path, capsys=capsys)
    assert code == 0 and out.splitlines()[-1] == f"{path}: OK"
    assert err == f"warning: {warning}\n"
    code, out, err = check(path, "--strict", capsys=capsys)
    assert code == 1 and "OK" not in out
    assert err == f"warning: {warning}\nerror: {path}: 1 warning(s) and --strict\n"


def test_run_logs_the_labels_filter_warning_at_start(tmp_path, caplog):
    path = write(tmp_path, f'path = "{COLOR}"\nlabels = "{LABELS}"\nlabels_filter = ["rde"]\n')
    config = load_config(path, env={})
    caplog.set_level(logging.WARNING, logger="edge_agent.daemon.startup")
    supervisor, fallback_error = start_supervisor(
        config, model_options(config), {"name": "color", "version": ""}, lambda *a: None
    )
    try:
        assert fallback_error == ""
        assert supervisor.current.codec.decoder.labels_filter == {"rde"}
    finally:
        supervisor.stop(3.0)
    assert [r.getMessage() for r in caplog.records] == [
        f'{path}: model.labels_filter: "rde" is not a label of the model (labels from '
        f'{LABELS}), so it keeps nothing; did you mean "red"?'
    ]


def test_two_home_assistant_entities_of_one_id_fail_the_check_as_they_fail_run(tmp_path, capsys):
    """Camera "front" with label "yard_person", camera "front_yard" with "person": both
    make the entities ``front_yard_person_*``, which run refuses at start."""
    cameras = "".join(
        f'[[camera]]\nname = "{name}"\nsource = "synthetic"\n' for name in ("front", "front_yard")
    )
    path = write(tmp_path, f'path = "{COLOR}"\nlabels = "{LABELS}"\n')
    path.write_text(
        f"{path.read_text()}\n{cameras}[mqtt]\nhomeassistant = true\n"
        '[events]\nenabled = true\nlabels = ["person", "yard_person"]\n'
    )
    code, out, err = check(path, capsys=capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {path}: camera.name: entities "), err
    assert "front_yard_person_" in err and err.count("\n") == 1
    # The daemon's own discovery refuses the same config with the same words.
    config = load_config(path, env={})
    topics = device_topics(config, device_id(config))
    with pytest.raises(ConfigError) as caught:
        entity_messages(config, topics, events=True)
    assert err == f"error: {path}: {caught.value}\n"
    path.write_text(path.read_text().replace("homeassistant = true", "homeassistant = false"))
    off = load_config(path, env={})
    assert entity_messages(off, topics, events=True) == []
    assert check(path, capsys=capsys)[0] == 0


def test_without_a_file_it_checks_the_config_run_would_load(tmp_path, capsys, monkeypatch):
    # run and doctor read $EDGE_AGENT_CONFIG when no file is given; check-config read the
    # system file instead, so it could pass a config other than the one run starts with.
    path = write(tmp_path, 'path = "nope.tflite"\n')
    monkeypatch.setenv("EDGE_AGENT_CONFIG", str(path))
    code = main(["check-config"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert f"error: {path}: model.path:" in err, err


@pytest.mark.parametrize("command", [["check-config"], ["run"]])
def test_an_empty_edge_agent_config_means_the_default_file(capsys, monkeypatch, command):
    # `EDGE_AGENT_CONFIG=` (an empty line in /etc/default/edge-agent) was taken as the
    # path "": "error: cannot read config file: No such file or directory", naming no
    # file. Empty is unset, as for the EDGE_AGENT_MQTT_* overrides.
    from edge_agent.config import DEFAULT_CONFIG_PATH

    monkeypatch.setenv("EDGE_AGENT_CONFIG", "")
    monkeypatch.setattr("edge_agent.config.loader.DEFAULT_CONFIG_PATH", "/nonexistent/c.toml")
    code = main(command)
    out, err = capsys.readouterr()
    assert code in (1, 2) and out == ""
    assert "/nonexistent/c.toml: cannot read config file" in err, err
    assert DEFAULT_CONFIG_PATH == "/etc/edge-agent/config.toml"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("setting", "key", "message"),
    [
        ("path", "model.path", "{fifo}: cannot read model: not a regular file"),
        (
            "labels",
            "model.labels",
            "cannot read label file {fifo}: [Errno 22] not a regular file",
        ),
    ],
)
def test_a_model_or_label_file_that_is_no_regular_file_is_refused(
    tmp_path, capsys, setting, key, message
):
    # A FIFO (or /dev/zero) as model.path or model.labels: check-config, and run before
    # it starts a model, blocked in open() for good (/dev/zero: read without end until
    # memory ran out).
    import os

    fifo = tmp_path / "pipe.tflite"
    os.mkfifo(fifo)
    lines = f'path = "{COLOR}"\nlabels = "{LABELS}"\n'.replace(
        f'{setting} = "{COLOR if setting == "path" else LABELS}"', f'{setting} = "{fifo}"'
    )
    path = write(tmp_path, lines)
    code, out, err = check(path, capsys=capsys)
    assert (code, out) == (1, "")
    assert err == f"error: {path}: {key}: {message.format(fifo=fifo)}\n", err
    config = load_config(path, env={})
    with pytest.raises(ModelError) as caught:
        start_supervisor(config, model_options(config), {}, lambda *a: None)
    assert caught.value.key == key


@pytest.mark.timeout(20)
def test_a_trusted_key_that_is_no_regular_file_is_refused(tmp_path, capsys):
    # A FIFO (or /dev/zero) in updates.trusted_keys blocked check-config, and run at start,
    # in the read of the key for good.
    import os

    fifo = tmp_path / "k.pub"
    os.mkfifo(fifo)
    path = write(tmp_path, f'path = "{COLOR}"\n[updates]\ntrusted_keys = ["{fifo}"]\n')
    code, out, err = check(path, capsys=capsys)
    assert (code, out) == (1, "")
    assert err == f"error: {path}: updates.trusted_keys[0]: {fifo}: not a regular file\n", err


def test_a_release_directory_it_may_not_list_is_a_warning_not_a_traceback(
    tmp_path, capsys, monkeypatch
):
    # An admin in the edge-agent group runs check-config: {state_dir}/models is the
    # daemon's (0700), listing it raised PermissionError out of check-config as a
    # traceback. (The tests run as root, so the refusal is injected.)
    import os

    path = write(tmp_path, f'path = "{COLOR}"\n')
    models = tmp_path / "state" / "models"
    models.mkdir(parents=True)
    real_listdir = os.listdir

    def listdir(target):
        if os.fspath(target) == str(models):
            raise PermissionError(13, "Permission denied", str(target))
        return real_listdir(target)

    monkeypatch.setattr(os, "listdir", listdir)
    code, out, err = check(path, capsys=capsys)
    assert code == 0 and out.endswith(f"{path}: OK\n"), err
    assert f"warning: {path}: device.state_dir: cannot list {models} (Permission denied)" in err
    assert check(path, "--strict", capsys=capsys)[0] == 1
