"""Tier 3: ``edge-agent run`` with a bad config file: one exact line, no traceback.

The daemon is the real console entry (``python -m edge_agent run --config bad.toml``),
run from the config's directory so the message names the file as the user typed it.
"""

from __future__ import annotations

import re
import signal

import pytest

from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

CASES = [
    ('[mqtt]\nport = "abc"\n', 'bad.toml: mqtt.port: expected integer 1..65535, got "abc"'),
    ("[mqtt]\nprot = 1883\n", 'bad.toml: mqtt.prot: unknown key; did you mean "port"?'),
    ("[model]\nthreshold = 1.5\n", "bad.toml: model.threshold: expected number 0..1, got 1.5"),
    ('[[camera]]\nname = "a"\n', "bad.toml: camera[0].source: required key is missing"),
    (
        "[mqtt\nport = 1\n",
        "bad.toml: line 1: Expected ']' at the end of a table declaration (column 6)",
    ),
]


@pytest.mark.parametrize(("text", "message"), CASES, ids=lambda v: v.split(":")[0][:24])
def test_bad_config_is_one_exact_line(tmp_path, edge_daemon, text, message):
    (tmp_path / "bad.toml").write_text(text)
    proc = edge_daemon.run_cli("run", "--config", "bad.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"edge-agent run: error: {message}\n"
    assert proc.stdout == ""


def test_missing_config_file_is_one_line(tmp_path, edge_daemon):
    proc = edge_daemon.run_cli("run", "--config", "nope.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        "edge-agent run: error: nope.toml: cannot read config file: No such file or directory\n"
    )


def test_unloadable_model_exits_1_naming_the_model(tmp_path, edge_daemon):
    (tmp_path / "cfg.toml").write_text(
        f'[device]\nid = "e2e-dev"\nstate_dir = "{tmp_path / "state"}"\n'
        '[[camera]]\nsource = "synthetic:64x48"\n'
        '[model]\npath = "missing.tflite"\n'
        "[mqtt]\nenabled = false\n"
    )
    proc = edge_daemon.run_cli("run", "--config", "cfg.toml", cwd=tmp_path)
    model = tmp_path / "missing.tflite"  # relative paths resolve against the config's dir
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"model {model}: cannot start: {model}: cannot read model" in proc.stderr


def test_a_daemon_that_cannot_start_leaves_failed_in_its_retained_status(
    tmp_path, edge_daemon, mqtt_broker, mqtt_subscriber
):
    (tmp_path / "cfg.toml").write_text(
        f'[device]\nid = "e2e-dev"\nstate_dir = "{tmp_path / "state"}"\n'
        '[[camera]]\nsource = "synthetic:64x48"\n'
        '[model]\npath = "missing.tflite"\n'
        f'[mqtt]\nport = {mqtt_broker.port}\nprefix = "e2e"\nhomeassistant = false\n'
    )
    proc = edge_daemon.run_cli("run", "--config", "cfg.toml", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    status = edge_daemon.retained(mqtt_broker, "e2e/e2e-dev/status").json()
    assert status["state"] == "failed"
    assert "cannot read model" in status["last_error"]
    assert edge_daemon.retained(mqtt_broker, "e2e/e2e-dev/available").payload == b"offline"


def test_missing_tls_ca_file_exits_2_naming_the_file_and_key(tmp_path, edge_daemon):
    (tmp_path / "cfg.toml").write_text(
        f'[device]\nid = "e2e-dev"\nstate_dir = "{tmp_path / "state"}"\n'
        '[[camera]]\nsource = "synthetic:64x48"\n'
        '[model]\npath = "missing.tflite"\n'
        '[mqtt]\ntls = true\nca_file = "missing-ca.pem"\n'
    )
    proc = edge_daemon.run_cli("run", "--config", "cfg.toml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr  # a configuration error, as documented
    assert "Traceback" not in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "cannot start" in x)
    assert f"cannot start: cfg.toml: mqtt.ca_file: file not found: {tmp_path}" in line
    assert "model" not in line  # the real cause, not the model


def test_a_labels_filter_typo_is_logged_at_start_and_on_reload(tmp_path, edge_daemon):
    demo = REPO / "models" / "demo"
    daemon = edge_daemon(
        1883,  # not used: MQTT is off
        demo / "clip.avi",
        demo / "color_blobs.tflite",
        demo / "labels.txt",
        model={"labels_filter": ["rde"]},
        mqtt={"enabled": False},
    )
    prefix = re.escape(f"{daemon.config_path}: model.labels_filter: ")
    where = re.escape(f"(labels from {demo / 'labels.txt'})")
    at_start = rf'WARNING .*{prefix}"rde" is not a label of the model {where}.*"red"\?'
    daemon.wait_log(at_start, timeout=20)
    daemon.wait_log(r"camera cam0: streaming", timeout=20)
    mark = len(daemon.log())
    daemon.write_config(model={"labels_filter": ["bleu"]})
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_log(rf'{prefix}"bleu" is not a label.*did you mean "blue"\?', 10, after=mark)
    daemon.wait_log(r"reload: applied", timeout=10, after=mark)
    assert daemon.stop(timeout=10) == 0


START_FILES = [
    ('[mqtt]\ntls = true\nca_file = "missing-ca.pem"\n', "mqtt.ca_file", "file not found"),
    ('[updates]\ntrusted_keys = ["missing.pub"]\n', "updates.trusted_keys[0]", "missing.pub"),
]


@pytest.mark.parametrize(("text", "key", "words"), START_FILES, ids=["ca_file", "trusted_key"])
def test_a_file_run_refuses_at_start_fails_check_config_too(
    tmp_path, edge_daemon, text, key, words
):
    # check-config said OK (exit 0) for both; run refused them, and a missing trusted key
    # was blamed on the model ("model ...: cannot start: bad_key: ...", exit 1).
    demo = REPO / "models" / "demo"
    (tmp_path / "cfg.toml").write_text(
        f'[device]\nid = "e2e-dev"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[camera]]\nsource = "synthetic:64x48"\n[model]\npath = "{demo / "color_blobs.tflite"}"\n'
        + text
    )
    checked = edge_daemon.run_cli("check-config", "cfg.toml", cwd=tmp_path)
    assert (checked.returncode, checked.stdout) == (1, ""), checked.stdout
    assert checked.stderr.startswith(f"error: cfg.toml: {key}: "), checked.stderr
    assert words in checked.stderr
    proc = edge_daemon.run_cli("run", "--config", "cfg.toml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr  # a configuration error, as documented
    assert "Traceback" not in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "cannot start" in x)
    assert f"cannot start: cfg.toml: {key}: " in line and words in line, line
