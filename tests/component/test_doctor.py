"""Tier 2: ``edge-agent doctor`` against real models, a real broker and fake device trees.

A good config (fixture model, the demo clip as camera, a real broker, a real signing
key) passes with exit 0; a broken one fails exactly the checks that are broken, each
saying why. The model is probed in a child process, so the fake Edge TPU (the
``edgetpu`` backend plugin found through the path, as by the daemon's worker) can make it run on the
"TPU", be absent, abort the process or hang. Sysfs and /dev are fake trees.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.publishing.settings import MqttSettings
from edge_agent.tools.doctor import host as doctor_host
from edge_agent.tools.doctor.probes import probe_broker
from edge_agent.tools.doctor.report import FAIL, INFO, OK, SKIP, WARN, Doctor, Report
from edge_agent.tools.release.operator import keygen
from tests.support.broker import free_port
from tests.support.daemon import daemon_environment, to_toml
from tests.support.fake_tpu import write_state
from tests.support.paths import REPO, fixture_model

pytestmark = pytest.mark.timeout(120)

CLIP = REPO / "models" / "demo" / "clip.avi"


def write_config(tmp_path: Path, port: int, **overrides) -> Path:
    """A config with the fixture colour classifier, the demo clip, ``port`` and a key."""
    keygen(tmp_path / "release.key", tmp_path / "release.pub", overwrite=True)
    sections = {
        "device": {"id": "doc", "state_dir": str(tmp_path / "state")},
        "camera": [{"name": "cam0", "source": str(CLIP)}],
        "model": {
            "path": str(fixture_model("color_uint8.tflite")),
            "labels": str(fixture_model("color_labels.txt")),
            "num_threads": 1,
        },
        "mqtt": {"host": "127.0.0.1", "port": port},
        "updates": {"trusted_keys": [str(tmp_path / "release.pub")]},
    }
    for name, values in overrides.items():
        if name == "camera":
            sections["camera"][0].update(values)
        else:
            sections[name].update(values)
    path = tmp_path / "config.toml"
    path.write_text(to_toml(sections))
    return path


def by_name(checks) -> dict[tuple[str, str], dict]:
    """JSON checks keyed by (section, name)."""
    return {(c["section"], c["name"]): c for c in checks}


def run(config: Path, *, sys_root: str = "/sys", **kw) -> Report:
    """Run the doctor in this process (the model still loads in a child)."""
    return Doctor(str(config), explicit=True, sys_root=sys_root, **kw).run()


def test_good_config_passes_on_the_cpu(tmp_path, mqtt_broker):
    config = write_config(tmp_path, mqtt_broker.port)
    key_id = keygen(tmp_path / "k2", tmp_path / "k2.pub")  # a second key, for the count
    config.write_text(config.read_text().replace('release.pub"]', 'release.pub", "k2.pub"]'))
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "doctor", "--config", str(config), "--json"],
        cwd=tmp_path,
        env=daemon_environment(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    checks = by_name(report["checks"])
    assert report["ok"] is True and report["errors"] == 0
    assert not [c for c in report["checks"] if c["status"] == FAIL]

    assert checks[("Config", "config")]["status"] == OK
    assert checks[("State", "state_dir")]["detail"].endswith(
        f"does not exist yet; the daemon will create it in {tmp_path}"
    )
    cam = checks[("Cameras", "cam0")]
    assert (cam["status"], cam["data"]["shape"]) == (OK, [480, 640, 3])
    model = checks[("Model", "model")]
    assert model["status"] == OK
    assert model["data"]["backend"] == "cpu"
    assert model["data"]["file"] == str(fixture_model("color_uint8.tflite"))
    assert model["data"]["task"] == "classification"
    assert model["data"]["input"] == [[1, 32, 32, 3], "uint8"]
    assert model["data"]["labels"] == 3
    assert (model["data"]["labels_source"], model["data"]["family"]) == ("file", "classification")
    assert model["data"]["normalization"]["source"] == "identity"
    assumed = checks[("Model", "assumptions")]["detail"]
    assert assumed.startswith("classification (classification); input normalization: [-1, 1]")
    # color_uint8_edgetpu.tflite lies beside it, and no Edge TPU exists here.
    skipped = checks[("Model", "edgetpu skipped")]
    assert skipped["status"] == WARN
    assert skipped["detail"] == "no Edge TPU matching 'auto' found (0 visible: none)"
    broker = checks[("MQTT", "broker")]
    assert (broker["status"], broker["data"]["stage"]) == (OK, "connack")
    assert broker["detail"].startswith(f"127.0.0.1:{mqtt_broker.port}: connected (tcp, no TLS")
    keys = checks[("Updates", "trusted_keys")]
    assert keys["status"] == OK and key_id in keys["data"]["ids"]
    assert len(keys["data"]["ids"]) == 2
    runtimes = {c["name"] for c in report["checks"] if c["section"] == "TFLite runtimes"}
    assert "ai_edge_litert" in runtimes
    # numpy is listed once (with the packages); the runtimes name it only on a conflict.
    assert [c["section"] for c in report["checks"] if c["name"] == "numpy"] == [
        "Python and packages"
    ]


def test_broken_config_fails_exactly_the_broken_checks(tmp_path):
    port = free_port()  # nobody listens there
    missing = tmp_path / "missing.tflite"
    config = write_config(
        tmp_path, port, model={"path": str(missing)}, camera={"source": str(tmp_path / "no.avi")}
    )
    report = run(config, timeout=2.0)
    failed = {(c.section, c.name): c for c in report.failed()}
    assert set(failed) == {("Cameras", "cam0"), ("Model", "model"), ("MQTT", "broker")}
    assert failed[("Model", "model")].detail == f"{missing}: no such file"
    assert failed[("Cameras", "cam0")].detail == f"{tmp_path / 'no.avi'}: no such file"
    broker = failed[("MQTT", "broker")]
    assert broker.data["stage"] == "tcp"
    assert broker.detail.startswith(f"127.0.0.1:{port}: Connection refused")
    assert not report.ok
    text = report.format_text()
    assert re.search(r"\n3 error\(s\), \d+ warning\(s\): NOT ready$", text), text
    assert "  FAIL  model" in text


def test_camera_passwords_never_reach_the_report(tmp_path):
    config = write_config(
        tmp_path, free_port(), camera={"source": "rtsp://viewer:s3cret@127.0.0.1:1/stream1"}
    )
    doctor = Doctor(str(config), explicit=True, timeout=3.0)
    doctor.cameras(load_config(config))
    [cam] = doctor.report.checks
    assert cam.status == FAIL
    assert cam.detail.startswith("rtsp://viewer:***@127.0.0.1:1/stream1")
    assert "s3cret" not in json.dumps(doctor.report.to_json())


def test_invalid_config_names_the_key_and_skips_the_config_checks(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[[camera]]\nsource = 0\n[mqtt]\nport = "abc"\n')
    report = run(config)
    failed = report.failed()
    assert [(c.section, c.name) for c in failed] == [("Config", "config")]
    assert failed[0].detail == f'{config}: mqtt.port: expected integer 1..65535, got "abc"'
    assert not [c for c in report.checks if c.section in ("Model", "MQTT", "State")]


def test_missing_config_fails_only_when_named(tmp_path, monkeypatch):
    absent = str(tmp_path / "absent.toml")
    monkeypatch.delenv("EDGE_AGENT_CONFIG", raising=False)
    monkeypatch.setattr("edge_agent.tools.doctor.report.DEFAULT_CONFIG_PATH", absent)
    default = Doctor().run()
    config = [c for c in default.checks if c.section == "Config"]
    assert [(c.status, c.detail) for c in config] == [
        (WARN, f"{absent} does not exist: config checks skipped (use --config FILE)")
    ]
    named = Doctor(absent, explicit=True).run()
    assert [c.section for c in named.failed()] == ["Config"]


def test_model_on_the_fake_tpu_and_a_tpu_that_aborts_or_hangs(
    tmp_path, mqtt_broker, fake_tpu_state
):
    state = fake_tpu_state
    write_state(state, devices=["usb"])
    config = write_config(tmp_path, mqtt_broker.port)

    report = run(config)
    checks = {(c.section, c.name): c for c in report.checks}
    model = checks[("Model", "model")]
    assert (model.status, model.data["backend"]) == (OK, "edgetpu")
    assert model.data["file"] == str(fixture_model("color_uint8_edgetpu.tflite"))
    assert model.data["attempts"] == []
    assert checks[("Edge TPU", "devices")].detail == "1: usb /fake/usb/0"
    assert checks[("Edge TPU", "driver")].detail == (
        "plugin edge-agent-fake-tpu 1.0 (tests.support.fake_tpu:FakeEdgeTpuBackend) "
        "replaces the built-in edgetpu backend"
    )
    assert report.ok

    write_state(state, devices=["usb"], invoke="abort")  # libedgetpu on a USB error
    aborted = run(config)
    failed = {(c.section, c.name): c for c in aborted.failed()}
    assert set(failed) == {("Model", "model")}
    assert failed[("Model", "model")].detail.startswith(
        f"{fixture_model('color_uint8.tflite')}: loading crashed the process (SIGABRT)"
    )

    write_state(state, devices=["usb"], invoke="hang")
    hung = run(config, model_timeout=3.0)
    assert [c.detail for c in hung.failed()] == [
        f"{fixture_model('color_uint8.tflite')}: loading did not finish within 3s (hung)"
    ]


def test_broker_credentials_are_checked_by_the_connack(tmp_path, mqtt_broker_factory):
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwords), "edge", "s3cret-pw"], check=True, timeout=10
    )
    broker = mqtt_broker_factory("mosquitto", password_file=passwords)
    settings = MqttSettings(host=broker.host, port=broker.port, username="edge")

    settings.password = "s3cret-pw"
    good = probe_broker(settings, 5.0)
    assert (good.ok, good.stage) == (True, "connack")

    settings.password = "wrong"
    bad = probe_broker(settings, 5.0)
    assert (bad.ok, bad.stage) == (False, "connack")
    assert bad.detail == f"{broker.host}:{broker.port}: connection refused: Not authorized"

    settings.username, settings.password = None, None
    anonymous = probe_broker(settings, 5.0)
    assert (anonymous.ok, anonymous.stage) == (False, "connack")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_devices_temperatures_and_permissions_from_fake_trees(tmp_path):
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    write(sys_root / "class/apex/apex_0/temp", "87500\n")
    write(sys_root / "class/apex/apex_1/temp", "41000\n")
    write(dev_root / "apex_0", "")  # apex_1 has no device node
    for name, ids, bus, num in (("2-1", ("18d1", "9302"), 2, 5), ("1-3", ("1a6e", "089a"), 1, 7)):
        for key, value in zip(("idVendor", "idProduct", "busnum", "devnum"), (*ids, bus, num)):
            write(sys_root / "bus/usb/devices" / name / key, f"{value}\n")
    write(dev_root / "bus/usb/001/007", "")  # the Google-ID device's node is missing
    write(sys_root / "class/video4linux/video0/name", "UVC Camera\n")
    write(dev_root / "video0", "")
    report = Report()
    host = doctor_host.HostChecks(report, str(sys_root), str(dev_root))
    host.coral("pci")
    host.video_devices()
    checks = {(c.section, c.name): c for c in report.checks}

    devices = checks[("Edge TPU", "devices")]
    assert (devices.status, devices.data["count"]) == (OK, 4)
    assert checks[("Edge TPU", "apex_0")].status == WARN
    assert checks[("Edge TPU", "apex_0")].detail == "87.5 C (throttling)"
    assert (checks[("Edge TPU", "apex_1")].status, checks[("Edge TPU", "apex_1")].detail) == (
        INFO,
        "41.0 C",
    )
    # device = "pci" makes a missing libedgetpu an error, not a warning.
    assert checks[("Edge TPU", "libedgetpu")].status in (OK, FAIL)
    assert checks[("Permissions", "apex_0")].status == OK  # root here: access is granted
    assert checks[("Permissions", "apex_1")].detail == (
        f"{dev_root / 'apex_1'} is missing although the apex driver lists "
        f"{sys_root / 'class/apex/apex_1'}"
    )
    missing = checks[("Permissions", "bus/usb/002/005")]
    assert missing.status == FAIL and "No such file or directory" in missing.detail
    assert checks[("Permissions", "bus/usb/001/007")].status == OK
    firmware = checks[("Edge TPU", "usb firmware")]
    assert firmware.detail.startswith(str(sys_root / "bus/usb/devices/1-3"))
    assert checks[("Cameras", "v4l2")].detail == f"{dev_root / 'video0'} (UVC Camera)"


def test_empty_trees_warn_without_failing(tmp_path):
    report = Report()
    host = doctor_host.HostChecks(report, str(tmp_path), str(tmp_path))
    host.coral("auto")
    checks = {(c.section, c.name): c for c in report.checks}
    assert checks[("Edge TPU", "devices")].status == WARN
    assert checks[("Permissions", "devices")].status == SKIP
    assert checks[("Edge TPU", "libedgetpu")].status in (OK, WARN)


def test_a_box_without_libedgetpu_is_told_the_package_and_the_community_build(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(doctor_host, "delegate_path", lambda configured: "libedgetpu-absent.so.1")
    report = Report()
    doctor_host.HostChecks(report, str(tmp_path), str(tmp_path)).coral("usb")
    lib = {(c.section, c.name): c for c in report.checks}[("Edge TPU", "libedgetpu")]
    assert lib.status == FAIL  # an explicit device makes it an error
    assert "libedgetpu-absent.so.1 does not load" in lib.detail
    assert "libedgetpu1-std" in lib.detail
    assert "packages.cloud.google.com/apt coral-edgetpu-stable" in lib.detail
    assert "github.com/feranick/libedgetpu/releases" in lib.detail


def test_pycoral_impostor_is_told_apart_from_corals(tmp_path, monkeypatch):
    impostor = tmp_path / "impostor"
    write(impostor / "pycoral/__init__.py", "")
    real = tmp_path / "real"
    write(real / "pycoral/__init__.py", "")
    write(real / "pycoral/utils/__init__.py", "")
    write(real / "pycoral/utils/edgetpu.py", "def list_edge_tpus():\n    return []\n")

    def pycoral_check(root: Path):
        """The pycoral check with ``root`` first on sys.path and no pycoral imported."""
        with monkeypatch.context() as patch:
            for name in [m for m in sys.modules if m.split(".")[0] == "pycoral"]:
                patch.delitem(sys.modules, name)
            patch.syspath_prepend(str(root))
            report = Report()
            doctor_host.HostChecks(report, str(tmp_path), str(tmp_path))._pycoral()
            for name in [m for m in sys.modules if m.split(".")[0] == "pycoral"]:
                del sys.modules[name]  # imported from root: must not outlive it
        return report.checks[0]

    fake = pycoral_check(impostor)
    assert fake.status == WARN and "is not Coral's" in fake.detail
    coral = pycoral_check(real)
    assert coral.status == OK and coral.detail.startswith("Coral's pycoral")


def test_tflite_runtime_with_numpy_2_is_a_warning(monkeypatch):
    real = doctor_host.dist_version
    monkeypatch.setattr(
        doctor_host,
        "dist_version",
        lambda *names: "2.1.3" if names == ("numpy",) else real(*names),
    )
    report = Report()
    doctor_host.HostChecks(report).runtimes()
    numpy_checks = [c for c in report.checks if c.name == "numpy"]
    if doctor_host.importlib.util.find_spec("tflite_runtime") is None:
        assert numpy_checks == []  # no conflict, so no second numpy line
        return
    numpy_check = numpy_checks[0]
    assert numpy_check.status == WARN
    assert numpy_check.detail.startswith("numpy 2.1.3 with tflite-runtime")


def test_a_fitted_camera_is_grabbed_in_the_mode_sized_to_the_model(tmp_path, monkeypatch):
    """The doctor opens a ``fit_model`` device as the daemon would: for the configured
    model's input (the colour fixture: 32x32, stretched), and says so."""
    from edge_agent.capture.v4l2 import ModelFit
    from edge_agent.tools.doctor import report as doctor_report

    grabbed = {}

    def grab(cam, timeout, fit=None):
        grabbed[cam.name] = fit
        return [48, 64, 3], "", 0.01  # what the fitted device gave

    monkeypatch.setattr(doctor_report, "grab_frame", grab)
    path = write_config(tmp_path, free_port(), camera={"source": "/dev/video7", "fit_model": True})
    doctor = Doctor(str(path), explicit=True)
    doctor.cameras(load_config(str(path)))
    (check,) = doctor.report.checks
    assert grabbed == {"cam0": ModelFit(32, 32, letterbox=False)}
    assert check.status == OK and check.data["fit"] == [32, 32, False]
    assert check.detail.endswith("(fit_model, for the model's 32x32 input)")
    # Without fit_model, or for a file, OpenCV's own mode, as the daemon would.
    for camera in ({"source": "/dev/video7"}, {"source": str(CLIP), "fit_model": True}):
        grabbed.clear()
        path = write_config(tmp_path, free_port(), camera=camera)
        Doctor(str(path), explicit=True).cameras(load_config(str(path)))
        assert grabbed == {"cam0": None}


def test_the_doctor_opens_a_device_with_the_fit(monkeypatch):
    from types import SimpleNamespace

    from edge_agent.capture import sources
    from edge_agent.capture.v4l2 import ModelFit
    from edge_agent.errors import CaptureError
    from edge_agent.tools.doctor.probes import grab_frame

    seen = {}

    def opener(spec, **kwargs):
        seen.update(kwargs)
        raise CaptureError(f"{spec.display}: no such device")

    monkeypatch.setattr(sources, "open_capture", opener)
    cam = SimpleNamespace(name="cam0", source="/dev/video7", width=0, height=0, fps=0)
    shape, error, _ = grab_frame(cam, 2.0, ModelFit(224, 224, False))
    assert shape is None and error == "/dev/video7: no such device"
    assert seen["fit"] == ModelFit(224, 224, False)
