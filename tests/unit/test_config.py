"""Tier 1 tests of the TOML config: every error message, overrides, paths, warnings."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config import (
    DEFAULT_CONFIG_PATH,
    CameraConfig,
    Config,
    ConfigError,
    DeviceConfig,
    MqttConfig,
    import_toml,
    load_config,
    parse_config,
)
from edge_agent.config.loader import toml
from edge_agent.config.schema import ARRAYS, SECTIONS
from tests.support.paths import REPO

EXAMPLE = REPO / "deploy" / "config.example.toml"
SRC = "config.toml"
URL_SCHEMES = "rtsp, rtsps, rtmp, rtmps, http, https, udp, tcp or srt"
TOPIC = "string without '/', '+', '#', other than '.' and '..'"
SOURCE_EXPECTED = (
    'camera index (integer >= 0), device or file path, stream URL or "synthetic[:WxH[@FPS]]"'
)
PREFIX_EXPECTED = (
    "topic prefix like \"edge-agent\" or \"site/edge\" (no '+', '#', empty levels or leading '$')"
)
CAM = "[[camera]]\nsource = 0\n"


def parse(text: str, **kwargs) -> Config:
    """Parse with a fixed source name and an empty environment."""
    kwargs.setdefault("env", {})
    return parse_config(text, SRC, **kwargs)


BAD = [
    # TOML syntax
    ("a = 1\nb = \n", "line 2: Invalid value (column 5)"),
    ("[mqtt]\nport = [1,", "end of file: Invalid value"),
    ("[mqtt]\n[mqtt]\n", "line 2: Cannot declare ('mqtt',) twice (column 6)"),
    # top level
    ("[mqt]\n", 'mqt: unknown section; did you mean "mqtt"?'),
    ("[cameras]\n", 'cameras: unknown section; did you mean "camera"?'),
    ("port = 1883\n", 'port: unknown key; did you mean "mqtt.port"?'),
    ("enabled = true\n", "enabled: unknown key"),
    ("mqtt = 5\n", "mqtt: expected a table ([mqtt]), got 5"),
    ("[[mqtt]]\nport = 1\n", "mqtt: expected a table ([mqtt]), got an array of tables"),
    ("mqtt = [1]\n", "mqtt: expected a table ([mqtt]), got [1]"),
    ("[camera]\nsource = 0\n", "camera: expected array of tables ([[camera]]), got a table"),
    ("camera = []\n", "camera: expected at least one [[camera]] table, got []"),
    ("camera = [1]\n", "camera: expected array of tables ([[camera]]), got [1]"),
    # unknown keys
    ("[mqtt]\nprot = 1\n", 'mqtt.prot: unknown key; did you mean "port"?'),
    ("[mqtt]\nzzz = 1\n", "mqtt.zzz: unknown key"),
    ("[mqtt.tls_opts]\n", "mqtt.tls_opts: unknown key"),
    (CAM + "fsp = 5\n", 'camera[0].fsp: unknown key; did you mean "fps"?'),
    # [device]
    ('[device]\nid = "a#"\n', f'device.id: expected {TOPIC}, got "a#"'),
    ("[device]\nid = 1979-05-27\n", f"device.id: expected {TOPIC}, got 1979-05-27"),
    (
        '[device]\ngroups = ["a", "b/c"]\n',
        f'device.groups[1]: expected non-empty {TOPIC}, got "b/c"',
    ),
    ('[device]\ngroups = [""]\n', f'device.groups[0]: expected non-empty {TOPIC}, got ""'),
    (
        '[device]\ngroups = "a"\n',
        f'device.groups: expected array of non-empty {TOPIC.replace("string", "strings")}, got "a"',
    ),
    ('[device]\ngroups = ["a", "a"]\n', 'device.groups[1]: duplicate value "a"'),
    ('[device]\nstate_dir = ""\n', 'device.state_dir: expected non-empty string, got ""'),
    # [[camera]]
    (
        CAM + "[[camera]]\nsource = 1\nfps = -3\n",
        "camera[1].fps: expected number >= 0, got -3",
    ),
    (CAM + "fps = nan\n", "camera[0].fps: expected number >= 0, got nan"),
    (CAM + "fps = inf\n", "camera[0].fps: expected number >= 0, got inf"),
    (CAM + 'fps = "5"\n', 'camera[0].fps: expected number >= 0, got "5"'),
    (CAM + "width = -1\n", "camera[0].width: expected integer 0..16384, got -1"),
    (CAM + "height = 720.0\n", "camera[0].height: expected integer 0..16384, got 720.0"),
    (CAM + "loop = 1\n", "camera[0].loop: expected boolean (true or false), got 1"),
    (
        CAM + "stale_after = 0\n",
        "camera[0].stale_after: expected number > 0 and <= 31536000, got 0",
    ),
    (CAM + "decode_scale = 3\n", "camera[0].decode_scale: expected one of 1, 2, 4, 8, got 3"),
    (CAM + "decode_scale = true\n", "camera[0].decode_scale: expected one of 1, 2, 4, 8, got true"),
    (CAM + 'decode_scale = "2"\n', 'camera[0].decode_scale: expected one of 1, 2, 4, 8, got "2"'),
    (
        CAM + "reopen_initial = 2\nreopen_max = 1\n",
        "camera[0].reopen_max: expected number >= camera[0].reopen_initial (2), got 1",
    ),
    ('[[camera]]\nname = "front"\n', "camera[0].source: required key is missing"),
    ("[[camera]]\nsource = -1\n", f"camera[0].source: expected {SOURCE_EXPECTED}, got -1"),
    ('[[camera]]\nsource = ""\n', f'camera[0].source: expected {SOURCE_EXPECTED}, got ""'),
    ("[[camera]]\nsource = true\n", f"camera[0].source: expected {SOURCE_EXPECTED}, got true"),
    (
        '[[camera]]\nsource = "synthetic:0x480"\n',
        'camera[0].source: expected "synthetic" or "synthetic:WxH[@FPS]"'
        ' (e.g. "synthetic:640x480@15"), sides 32..8192, FPS > 0 and <= 1000,'
        ' got "synthetic:0x480"',
    ),
    (
        '[[camera]]\nsource = "rstp://cam.local/stream"\n',
        f"camera[0].source: expected stream URL ({URL_SCHEMES}) with a host,"
        ' got "rstp://cam.local/stream"',
    ),
    (  # the password in a bad URL is not echoed
        '[[camera]]\nsource = "rtsp://admin:hunter2@/stream"\n',
        f"camera[0].source: expected stream URL ({URL_SCHEMES}) with a host,"
        ' got "rtsp://admin:***@/stream"',
    ),
    (
        '[[camera]]\nsource = "rtsp://[::1/stream"\n',
        f"camera[0].source: expected stream URL ({URL_SCHEMES}) with a host,"
        ' got "rtsp://[::1/stream"',
    ),
    (
        '[updates]\nmanifest_url = "https://[oops/m.json"\n',
        'updates.manifest_url: expected http:// or https:// URL with a host, or "",'
        ' got "https://[oops/m.json"',
    ),
    (CAM + 'name = "a/b"\n', f'camera[0].name: expected non-empty {TOPIC}, got "a/b"'),
    # a camera name is also a directory name: snapshots/{camera}/
    (CAM + 'name = ".."\n', f'camera[0].name: expected non-empty {TOPIC}, got ".."'),
    (CAM + 'name = "."\n', f'camera[0].name: expected non-empty {TOPIC}, got "."'),
    (
        CAM + '[[camera]]\nname = "cam0"\nsource = 1\n',
        'camera[1].name: duplicate camera name "cam0" (also camera[0].name)',
    ),
    (  # the default name of the second camera is cam1
        CAM + '[[camera]]\nsource = 1\n[[camera]]\nname = "cam1"\nsource = 2\n',
        'camera[2].name: duplicate camera name "cam1" (also camera[1].name)',
    ),
    (
        "camera = [{source = 0}, 5]\n",
        "camera: expected array of tables ([[camera]]), got [a table, 5]",
    ),
    # [model]
    (
        '[model]\ndevice = "tpu"\n',
        'model.device: expected "auto", "cpu", "usb", "usb:N", "pci" or "pci:N", got "tpu"',
    ),
    (
        '[model]\ndevice = "usb:"\n',
        'model.device: expected "auto", "cpu", "usb", "usb:N", "pci" or "pci:N", got "usb:"',
    ),
    (
        '[model]\ntask = "detection"\n',
        'model.task: expected one of "auto", "classification", "detection-ssd", '
        '"detection-yolo", got "detection"',
    ),
    ("[model]\nthreshold = 1.5\n", "model.threshold: expected number 0..1, got 1.5"),
    ("[model]\niou = -0.1\n", "model.iou: expected number 0..1, got -0.1"),
    ("[model]\nmax_detections = 0\n", "model.max_detections: expected integer 1..1000, got 0"),
    ("[model]\ntop_k = -1\n", "model.top_k: expected integer >= 0, got -1"),
    ("[model]\nnum_threads = 1.5\n", "model.num_threads: expected integer 0..256, got 1.5"),
    ("[model]\npath = 3\n", "model.path: expected string, got 3"),
    (
        '[model]\nresize = "crop"\n',
        'model.resize: expected one of "auto", "stretch", "letterbox", got "crop"',
    ),
    (
        "[model]\ninput_mean = [1, 2]\ninput_std = [1]\n",
        "model.input_mean: expected array of 1 or 3 numbers, got [1, 2]",
    ),
    ("[model]\ninput_mean = [127.5]\n", "model.input_std: required when model.input_mean is set"),
    ("[model]\ninput_std = [127.5]\n", "model.input_mean: required when model.input_std is set"),
    (
        "[model]\ninput_mean = [0]\ninput_std = [1, 0, 1]\n",
        "model.input_std[1]: expected number > 0, got 0",
    ),
    ('[model]\ninput_mean = ["a"]\n', 'model.input_mean[0]: expected number, got "a"'),
    (
        '[model]\nlabels_filter = [""]\n',
        'model.labels_filter[0]: expected non-empty string, got ""',
    ),
    # [inference]
    (
        "[inference]\ndeadline = 0\n",
        "inference.deadline: expected number > 0 and <= 31536000, got 0",
    ),
    (
        "[inference]\nreprobe_initial = 60\nreprobe_max = 30\n",
        "inference.reprobe_max: expected number >= inference.reprobe_initial (60), got 30",
    ),
    (
        '[inference]\nwarmup = "no"\n',
        'inference.warmup: expected boolean (true or false), got "no"',
    ),
    # [mqtt]
    ('[mqtt]\nport = "abc"\n', 'mqtt.port: expected integer 1..65535, got "abc"'),
    ("[mqtt]\nport = 0\n", "mqtt.port: expected integer 1..65535, got 0"),
    ("[mqtt]\nport = 1883.0\n", "mqtt.port: expected integer 1..65535, got 1883.0"),
    ("[mqtt]\nport = true\n", "mqtt.port: expected integer 1..65535, got true"),
    ('[mqtt]\nhost = ""\n', 'mqtt.host: expected non-empty string, got ""'),
    ('[mqtt]\ntls = "yes"\n', 'mqtt.tls: expected boolean (true or false), got "yes"'),
    (
        '[mqtt]\ntransport = "udp"\n',
        'mqtt.transport: expected one of "tcp", "websockets", got "udp"',
    ),
    ("[mqtt]\npassword = 12345\n", "mqtt.password: expected string, got an integer"),
    ("[mqtt]\nkeepalive = 4\n", "mqtt.keepalive: expected integer 5..3600, got 4"),
    ("[mqtt]\nqos_results = 3\n", "mqtt.qos_results: expected integer 0..2, got 3"),
    ("[mqtt]\nqos_stats = -1\n", "mqtt.qos_stats: expected integer 0..2, got -1"),
    ('[mqtt]\nprefix = "a/+/b"\n', f'mqtt.prefix: expected {PREFIX_EXPECTED}, got "a/+/b"'),
    ('[mqtt]\nprefix = "/a"\n', f'mqtt.prefix: expected {PREFIX_EXPECTED}, got "/a"'),
    ('[mqtt]\nprefix = "a/"\n', f'mqtt.prefix: expected {PREFIX_EXPECTED}, got "a/"'),
    ('[mqtt]\nprefix = "a//b"\n', f'mqtt.prefix: expected {PREFIX_EXPECTED}, got "a//b"'),
    ('[mqtt]\nprefix = "$SYS"\n', f'mqtt.prefix: expected {PREFIX_EXPECTED}, got "$SYS"'),
    ('[mqtt]\nprefix = ""\n', f'mqtt.prefix: expected {PREFIX_EXPECTED}, got ""'),
    (
        '[mqtt]\ndiscovery_prefix = "ha/#"\n',
        f'mqtt.discovery_prefix: expected {PREFIX_EXPECTED}, got "ha/#"',
    ),
    # A valid topic prefix that Home Assistant discovery ids cannot use: refused when the
    # config is read (check-config), not once the daemon has started its cameras.
    (
        '[mqtt]\ndiscovery_prefix = "home.assistant"\n',
        "mqtt.discovery_prefix: expected levels of [A-Za-z0-9_-] separated by '/', "
        'got "home.assistant"',
    ),
    ("[mqtt]\nspool_max_mb = 0\n", "mqtt.spool_max_mb: expected number > 0 and <= 1048576, got 0"),
    (
        "[mqtt]\nreconnect_min = 5\nreconnect_max = 2\n",
        "mqtt.reconnect_max: expected number >= mqtt.reconnect_min (5), got 2",
    ),
    (
        '[mqtt]\ntls = true\ncert_file = "c.pem"\n',
        "mqtt.key_file: required when mqtt.cert_file is set",
    ),
    (
        '[mqtt]\ntls = true\nkey_file = "k.pem"\n',
        "mqtt.cert_file: required when mqtt.key_file is set",
    ),
    ('[mqtt]\nca_file = "ca.pem"\n', "mqtt.ca_file: requires mqtt.tls = true"),
    ("[mqtt]\ntls_insecure = true\n", "mqtt.tls_insecure: requires mqtt.tls = true"),
    # [stats]
    ("[stats]\ninterval = 0.5\n", "stats.interval: expected number 1..31536000, got 0.5"),
    # [updates]
    (
        "[updates]\npoll_interval = 5\n",
        "updates.poll_interval: expected 0 (no polling) or number 10..31536000, got 5",
    ),
    (
        "[updates]\npoll_interval = -1\n",
        "updates.poll_interval: expected 0 (no polling) or number 10..31536000, got -1",
    ),
    (
        "[updates]\npoll_interval = 60\n",
        "updates.manifest_url: required when updates.poll_interval > 0",
    ),
    (
        '[updates]\nmanifest_url = "ftp://models.example.com/m.json"\n',
        'updates.manifest_url: expected http:// or https:// URL with a host, or "",'
        ' got "ftp://models.example.com/m.json"',
    ),
    (
        '[updates]\nmanifest_url = "http://models.example.com/m.json"\n',
        "updates.manifest_url: http:// URL requires updates.allow_http = true",
    ),
    ("[updates]\nkeep_versions = 0\n", "updates.keep_versions: expected integer 1..20, got 0"),
    ("[updates]\nretries = 21\n", "updates.retries: expected integer 0..20, got 21"),
    (
        "[updates]\nmax_size_mb = -5\n",
        "updates.max_size_mb: expected number > 0 and <= 1048576, got -5",
    ),
    (
        "[updates]\ndownload_timeout = 0\n",
        "updates.download_timeout: expected number > 0 and <= 31536000, got 0",
    ),
    ("[updates]\nhealth_frames = -1\n", "updates.health_frames: expected integer >= 0, got -1"),
    (
        '[updates]\ntrusted_keys = "k.pub"\n',
        'updates.trusted_keys: expected array of non-empty strings, got "k.pub"',
    ),
    (
        "[updates]\nallowed_hosts = [1]\n",
        "updates.allowed_hosts[0]: expected non-empty string, got 1",
    ),
    # [events]
    (
        "[events]\nsnapshots = false\nsnapshot_keep_on_disk = true\n",
        "events.snapshot_keep_on_disk: requires events.snapshots = true",
    ),
    (
        "[events]\nsnapshot_max_disk_mb = 0\n",
        "events.snapshot_max_disk_mb: expected number > 0 and <= 1048576, got 0",
    ),
    # [logging]
    (
        '[logging]\nlevel = "verbose"\n',
        'logging.level: expected one of "DEBUG", "INFO", "WARNING", "ERROR", got "verbose"',
    ),
    # long values are shortened
    (
        '[device]\nid = "' + "x/" * 50 + '"\n',
        f'device.id: expected {TOPIC}, got "' + "x/" * 27 + 'x..."',  # 60 characters
    ),
    # every problem is reported, in file order
    (
        '[mqtt]\nport = "x"\n[device]\nid = 5\n',
        f'mqtt.port: expected integer 1..65535, got "x"\n{SRC}: device.id: expected {TOPIC}, got 5',
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[repr(t) for t, _ in BAD])
def test_invalid_config_raises_one_exact_error(text, expected):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value) == f"{SRC}: {expected}"
    assert info.value.file == SRC


def test_error_carries_the_dotted_key():
    with pytest.raises(ConfigError) as info:
        parse(CAM + "[[camera]]\nsource = 1\nfps = -3\n")
    assert info.value.key == "camera[1].fps"


def test_empty_file_gives_the_defaults():
    config = parse("")
    expected = Config(source=SRC, mqtt=MqttConfig(spool_dir="/var/lib/edge-agent/spool"))
    assert config == expected
    assert config.camera == (CameraConfig(name="cam0", source=0),)
    assert config.model.path == ""
    assert config.mqtt.port == 1883
    assert config.warnings == ()


def test_values_are_normalized():
    config = parse(
        '[[camera]]\nsource = "2"\nfps = 15\n'
        '[[camera]]\nsource = "synthetic:640x480"\n'
        '[logging]\nlevel = "debug"\n'
        '[device]\ngroups = ["garage", "north"]\n'
        "[model]\ninput_mean = [127.5]\ninput_std = [127, 128, 129]\n"
    )
    first, second = config.camera
    assert (first.name, first.source, first.fps) == ("cam0", 2, 15.0)
    assert type(first.fps) is float and type(first.source) is int
    assert (second.name, second.source) == ("cam1", "synthetic:640x480")
    assert config.logging.level == "DEBUG"
    assert config.device.groups == ("garage", "north")
    assert config.model.input_mean == (127.5,)
    assert config.model.input_std == (127.0, 128.0, 129.0)
    assert all(type(v) is float for v in config.model.input_std)


def test_config_is_frozen_and_replace_friendly():
    config = parse('[mqtt]\nhost = "broker"\n')
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mqtt.host = "other"  # type: ignore[misc]
    changed = dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, port=8883))
    assert (changed.mqtt.host, changed.mqtt.port, config.mqtt.port) == ("broker", 8883, 1883)
    assert config.cameras is config.camera
    assert hash(config) == hash(parse('[mqtt]\nhost = "broker"\n'))


def test_enabled_cameras_and_warning_when_all_disabled():
    config = parse(CAM + "enabled = false\n[[camera]]\nsource = 1\n")
    assert [cam.name for cam in config.enabled_cameras] == ["cam1"]
    assert config.warnings == ()
    config = parse(CAM + "enabled = false\n")
    assert config.warnings == (
        f"{SRC}: camera: every camera has enabled = false; nothing will be captured",
    )


@pytest.mark.parametrize(
    ("mqtt", "warned"),
    [
        ('host = "broker.lan"\npassword = "pw"', True),
        ('host = "broker.lan"\npassword = "pw"\ntls = true', False),
        ('host = "localhost"\npassword = "pw"', False),
        ('host = "127.0.0.1"\npassword = "pw"', False),
        ('host = "::1"\npassword = "pw"', False),
        ('host = "broker.lan"\npassword = "pw"\nenabled = false', False),
        ('host = "broker.lan"', False),
    ],
)
def test_clear_text_password_warning(mqtt, warned):
    config = parse(f"[mqtt]\n{mqtt}\n")
    expected = (
        (f'{SRC}: mqtt.password: sent in clear text to "broker.lan" because mqtt.tls = false',)
        if warned
        else ()
    )
    assert config.warnings == expected


# --- environment overrides -------------------------------------------------------


def test_env_overrides_username_and_password():
    env = {"EDGE_AGENT_MQTT_PASSWORD": "from-env", "EDGE_AGENT_MQTT_USERNAME": "agent"}
    config = parse('[mqtt]\nusername = "file-user"\npassword = "file-pw"\n', env=env)
    assert (config.mqtt.username, config.mqtt.password) == ("agent", "from-env")


def test_env_overrides_without_mqtt_section_and_empty_values_are_ignored():
    config = parse("", env={"EDGE_AGENT_MQTT_PASSWORD": "pw", "EDGE_AGENT_MQTT_USERNAME": ""})
    assert (config.mqtt.username, config.mqtt.password) == ("", "pw")
    config = parse('[mqtt]\nusername = "u"\n', env={"EDGE_AGENT_MQTT_USERNAME": ""})
    assert config.mqtt.username == "u"


def test_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("EDGE_AGENT_MQTT_PASSWORD", "from-os-env")
    monkeypatch.delenv("EDGE_AGENT_MQTT_USERNAME", raising=False)
    assert parse_config("", SRC).mqtt.password == "from-os-env"


def test_env_override_does_not_hide_a_malformed_section():
    with pytest.raises(ConfigError) as info:
        parse("mqtt = 5\n", env={"EDGE_AGENT_MQTT_PASSWORD": "pw"})
    assert str(info.value) == f"{SRC}: mqtt: expected a table ([mqtt]), got 5"


# --- paths -----------------------------------------------------------------------

PATHS_TOML = """
[device]
state_dir = "state"
[[camera]]
source = "clips/door.mp4"
[[camera]]
source = "/dev/video2"
[[camera]]
source = "rtsp://cam.lan/stream"
[[camera]]
source = "synthetic"
[[camera]]
source = "synthetic_night.mp4"
[model]
path = "models/m_edgetpu.tflite"
cpu_model = "/opt/m.tflite"
labels = "../labels.txt"
[mqtt]
tls = true
ca_file = "ca.pem"
[updates]
trusted_keys = ["keys/release.pub", "/etc/keys/b.pub"]
"""


def test_relative_paths_resolve_against_the_config_directory(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    path = etc / "config.toml"
    path.write_text(PATHS_TOML)
    config = load_config(path, env={})
    assert config.device.state_dir == f"{etc}/state"
    assert [cam.source for cam in config.camera] == [
        f"{etc}/clips/door.mp4",
        "/dev/video2",
        "rtsp://cam.lan/stream",
        "synthetic",
        f"{etc}/synthetic_night.mp4",
    ]
    assert config.model.path == f"{etc}/models/m_edgetpu.tflite"
    assert config.model.cpu_model == "/opt/m.tflite"
    assert config.model.labels == f"{tmp_path}/labels.txt"
    assert config.model.name == ""  # not a path
    assert config.mqtt.ca_file == f"{etc}/ca.pem"
    assert config.mqtt.cert_file == ""  # unset stays unset
    assert config.mqtt.spool_dir == f"{etc}/state/spool"
    assert config.updates.trusted_keys == (f"{etc}/keys/release.pub", "/etc/keys/b.pub")
    assert config.source == str(path)


def test_relative_config_path_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text('[model]\npath = "m.tflite"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("config.toml", env={})
    assert config.model.path == f"{tmp_path}/m.tflite"
    assert config.source == "config.toml"


def test_parse_config_leaves_relative_paths_unless_given_base_dir():
    text = '[model]\npath = "m.tflite"\n'
    assert parse(text).model.path == "m.tflite"
    assert parse(text, base_dir="/etc/edge-agent").model.path == "/etc/edge-agent/m.tflite"


def test_spool_dir_defaults_under_state_dir():
    assert parse('[device]\nstate_dir = "/data/ea"\n').mqtt.spool_dir == "/data/ea/spool"
    assert parse('[mqtt]\nspool_dir = "/tmp/s"\n').mqtt.spool_dir == "/tmp/s"
    assert Config(device=DeviceConfig(state_dir="/x")).spool_dir == "/x/spool"


# --- the file itself ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode", "secrets"),
    [
        ('[mqtt]\npassword = "pw"\n', 0o644, "mqtt.password"),
        ('[mqtt]\npassword = "pw"\n', 0o640, "mqtt.password"),
        ('[mqtt]\npassword = "pw"\n', 0o604, "mqtt.password"),
        ('[mqtt]\npassword = "pw"\n', 0o600, None),
        ('[mqtt]\npassword = "pw"\n', 0o400, None),
        ('[mqtt]\nusername = "u"\n', 0o644, None),
        (
            '[[camera]]\nsource = "rtsp://admin:pw@cam.lan/s"\n[mqtt]\npassword = "pw"\n',
            0o644,
            "mqtt.password, camera[0].source",
        ),
        (
            '[updates]\nmanifest_url = "https://u:p@models.example.com/m.json"\n',
            0o644,
            "updates.manifest_url",
        ),
    ],
)
def test_permissions_warning_for_secrets(tmp_path, text, mode, secrets):
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    config = load_config(path, env={})
    expected = (
        f"{path}: holds secrets ({secrets}) but its mode is {mode:04o}, readable beyond "
        f"its owner; run `chmod 600 {path}` (or pass the MQTT password in "
        "EDGE_AGENT_MQTT_PASSWORD)"
    )
    assert [w for w in config.warnings if "holds secrets" in w] == ([expected] if secrets else [])


def test_password_from_env_only_is_no_file_secret(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[mqtt]\n")
    path.chmod(0o644)
    config = load_config(path, env={"EDGE_AGENT_MQTT_PASSWORD": "pw"})
    assert config.mqtt.password == "pw"
    assert config.warnings == ()


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert str(info.value) == f"{missing}: cannot read config file: No such file or directory"
    assert info.value.file == str(missing)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    assert str(info.value) == f"{tmp_path}: cannot read config file: Is a directory"


def test_syntax_error_from_file_names_the_path(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[mqtt]\nport = 1883\n\n\n\n\nhost = = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: line 7: Invalid value (column 8)"
    assert isinstance(info.value.__cause__, toml.TOMLDecodeError)


def test_non_utf8_and_bom(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b'[mqtt]\nhost = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: not valid UTF-8 (byte 15)"
    path.write_bytes('\ufeff[mqtt]\nhost = "b"\n'.encode())
    assert load_config(path, env={}).mqtt.host == "b"


def test_load_config_validates_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[mqtt]\nport = "abc"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: mqtt.port: expected integer")):
        load_config(path, env={})
    path.write_text('[model]\npath = "/m.tflite"\n')
    assert load_config(path, env={}).model.path == "/m.tflite"  # the model file is not read
    assert DEFAULT_CONFIG_PATH == "/etc/edge-agent/config.toml"


# --- redaction -----------------------------------------------------------------------


def test_redacted_dict_masks_secrets_and_is_json_ready():
    config = parse(
        '[[camera]]\nsource = "rtsp://admin:hunter2@cam.lan:554/s"\n'
        '[[camera]]\nsource = "rtsp://admin:p@ss:w@cam.lan/s?user=x"\n'
        '[mqtt]\nusername = "agent"\npassword = "s3cret"\n'
        '[device]\ngroups = ["g"]\n'
    )
    data = config.redacted_dict()
    text = json.dumps(data)
    assert "s3cret" not in text and "hunter2" not in text and "ss:w" not in text
    assert data["mqtt"]["password"] == "***"
    assert data["mqtt"]["username"] == "agent"
    assert data["camera"][0]["source"] == "rtsp://admin:***@cam.lan:554/s"
    assert data["camera"][1]["source"] == "rtsp://admin:***@cam.lan/s?user=x"
    assert data["device"]["groups"] == ["g"]
    assert list(data) == [
        "device",
        "camera",
        "model",
        "inference",
        "mqtt",
        "stats",
        "updates",
        "events",
        "track",
        "zone",
        "logging",
    ]
    assert config.mqtt.password == "s3cret"  # the config itself is untouched
    assert parse("").redacted_dict()["mqtt"]["password"] == ""


# --- the example and the schema ----------------------------------------------------------


def test_example_config_validates_and_shows_the_defaults():
    config = load_config(EXAMPLE, env={})
    assert config.warnings == ()
    defaults = parse("", base_dir=str(EXAMPLE.parent)).redacted_dict()
    example = config.redacted_dict()
    assert example["model"].pop("path").endswith("_edgetpu.tflite")
    defaults["model"].pop("path")
    assert example == defaults


def test_example_config_mentions_every_setting():
    text = EXAMPLE.read_text()
    for section, cls in {**SECTIONS, **ARRAYS}.items():
        header = f"[[{section}]]" if section in ARRAYS else f"[{section}]"
        assert header in text
        for spec in dataclasses.fields(cls):
            assert re.search(rf"^(# )?{spec.name} = ", text, re.M), f"{section}.{spec.name}"


def test_every_default_passes_its_own_check():
    for cls in (*SECTIONS.values(), *ARRAYS.values()):
        for spec in dataclasses.fields(cls):
            if spec.default is None or spec.metadata["required"]:
                continue  # a required field's default only serves Configs built in code
            raw = list(spec.default) if isinstance(spec.default, tuple) else spec.default
            assert spec.metadata["check"](raw) == spec.default, f"{cls.__name__}.{spec.name}"


# --- tomllib / tomli ---------------------------------------------------------------


def test_import_toml_uses_tomllib_on_311():
    tomllib = pytest.importorskip("tomllib")
    assert import_toml((3, 11, 0)) is tomllib
    assert import_toml((3, 13)) is tomllib


def test_import_toml_falls_back_to_tomli(monkeypatch):
    fake = types.ModuleType("tomli")
    monkeypatch.setitem(sys.modules, "tomli", fake)
    assert import_toml((3, 10, 12)) is fake
    assert import_toml((3, 9)) is fake


def test_import_toml_without_tomli_fails_loudly(monkeypatch):
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ImportError):
        import_toml((3, 10))


def test_os_is_not_touched_by_parse_config(monkeypatch):
    """parse_config must be pure: no file is opened while validating."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"I/O during parse_config: {args}")

    monkeypatch.setattr("builtins.open", refuse)
    monkeypatch.setattr(os, "stat", refuse)
    parse(PATHS_TOML, base_dir="/etc/edge-agent")


# --- any value for any key: a Config or one ConfigError naming that key --------------

KEYS = [
    (section, spec.name)
    for section, cls in {**SECTIONS, **ARRAYS}.items()
    for spec in dataclasses.fields(cls)
]
SCALARS = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.booleans()
    | st.text(max_size=20)
    | st.sampled_from(["0", "synthetic:10x10", "rtsp://h/s", "usb:1", "a/b", "$x", "debug"])
)
VALUES = SCALARS | st.lists(SCALARS, max_size=4)


def toml_value(value) -> str:
    """Serialize a scalar or array as TOML (JSON strings are TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value), repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    # Raw non-ASCII is fine in TOML; DEL is the one control character JSON leaves raw.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_value_for_any_key_is_accepted_or_blamed_on_that_key(key, value):
    section, name = key
    if section in ARRAYS:
        table = f"[[{section}]]\n" + ("" if name == "source" else "source = 0\n")
        dotted = f"{section}[0].{name}"
    else:
        table = f"[{section}]\n"
        dotted = f"{section}.{name}"
    text = f"{table}{name} = {toml_value(value)}\n"
    try:
        config = parse(text)
    except ConfigError as exc:
        # Cross-field rules may blame the partner key of the same section.
        assert str(exc).startswith(f"{SRC}: {dotted.rsplit('.', 1)[0]}."), str(exc)
        assert exc.key is not None
    else:
        assert isinstance(config, Config)
