"""Hostile config files: each gives one ConfigError naming the file, never a crash."""

from __future__ import annotations

import os
import threading

import pytest

from edge_agent.config import ConfigError, load_config, parse_config
from edge_agent.config.loader import MAX_CONFIG_BYTES


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


DURATIONS = [
    "camera.reopen_initial",
    "camera.reopen_max",
    "camera.stale_after",
    "camera.motion_max_idle",
    "inference.deadline",
    "inference.reprobe_initial",
    "inference.reprobe_max",
    "inference.load_timeout",
    "mqtt.reconnect_min",
    "mqtt.reconnect_max",
    "stats.interval",
    "updates.poll_interval",
    "updates.download_timeout",
    "updates.attempt_timeout",
    "updates.update_timeout",
    "updates.min_rate_window",
    "events.update_interval",
    "events.max_age",
    "track.max_age",
]
YEAR = 365 * 24 * 3600


def _one(dotted: str, value: str) -> str:
    """A document setting only ``dotted`` (plus what its table requires)."""
    section, key = dotted.split(".")
    if section == "camera":
        return f"[[camera]]\nsource = 0\n{key} = {value}\n"
    if section == "track":
        return f'[[track]]\nlabel = "car"\n{key} = {value}\n'
    return f"[{section}]\n{key} = {value}\n"


@pytest.mark.parametrize("dotted", DURATIONS)
def test_a_duration_beyond_a_year_is_refused_naming_the_key(dotted):
    # 1e10 s passed check-config, then overflowed the OS timeout it was handed:
    # inference.load_timeout crashed `run` with a traceback, updates.download_timeout
    # killed the update thread at its first download (every later update ignored).
    with pytest.raises(ConfigError) as info:
        parse_config(_one(dotted, "1e10"), "c.toml", env={})
    section, key = dotted.split(".")
    where = f"{section}[0]" if section in ("camera", "track") else section
    assert str(info.value).startswith(f"c.toml: {where}.{key}: expected ")
    assert f"{YEAR}, got 10000000000.0" in str(info.value)


def test_every_duration_at_a_year_is_accepted():
    tables: dict[str, list[str]] = {}
    for dotted in DURATIONS:
        section, key = dotted.split(".")
        tables.setdefault(section, []).append(f"{key} = {YEAR}")
    tables["camera"].insert(0, "source = 0")
    tables["track"].insert(0, 'label = "car"')
    tables["updates"].insert(0, 'manifest_url = "https://example.org/m.json"')
    text = ""
    for name, lines in tables.items():
        header = f"[[{name}]]" if name in ("camera", "track") else f"[{name}]"
        text += header + "\n" + "\n".join(lines) + "\n"
    config = parse_config(text, "c.toml", env={})
    for dotted in DURATIONS:
        section, key = dotted.split(".")
        table = getattr(config, section)
        assert getattr(table[0] if isinstance(table, tuple) else table, key) == YEAR, dotted


def test_a_year_fits_the_timeouts_the_daemon_hands_it_to():
    # The bound is only useful if the OS takes it: a socket timeout and a lock wait.
    import socket
    import threading

    with socket.socket() as sock:
        sock.settimeout(16 * YEAR)  # the poll backoff waits up to 16 intervals
    assert 16 * YEAR < threading.TIMEOUT_MAX


def test_a_bounded_fraction_says_both_bounds():
    with pytest.raises(ConfigError) as info:
        parse_config("[[camera]]\nsource = 0\nmotion_threshold = 2\n", "c.toml", env={})
    assert str(info.value) == (
        "c.toml: camera[0].motion_threshold: expected number > 0 and <= 1, got 2"
    )


@pytest.mark.timeout(20)
def test_a_fifo_fed_without_end_is_refused_after_a_megabyte(tmp_path):
    """A FIFO is a supported config source (tests/faults/test_chaos_startup.py); one
    that never ends must not be read into memory for good."""
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed() -> None:
        try:
            with open(fifo, "wb") as out:
                while not stop.is_set():
                    out.write(b"# more\n" * 4096)
        except BrokenPipeError:
            pass  # the reader gave up (also raised again by the close): as it should

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        with pytest.raises(ConfigError, match="larger than 1048576 bytes") as caught:
            load_config(fifo)
        assert caught.value.file == str(fifo)
    finally:
        stop.set()
        writer.join(5.0)
    assert not writer.is_alive()


@pytest.mark.timeout(10)
def test_a_device_is_refused_not_read_without_end():
    with pytest.raises(ConfigError, match="not a regular file or a FIFO"):
        load_config("/dev/zero")


def test_a_file_beyond_a_megabyte_is_refused_naming_it(tmp_path):
    big = tmp_path / "config.toml"
    big.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match="larger than 1048576 bytes") as caught:
        load_config(big)
    assert caught.value.file == str(big)
    big.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 - 1))
    assert load_config(big).source == str(big)  # just under the bound: read as usual


NUL_KEYS = [
    ("[device]\nstate_dir", "device.state_dir"),
    ("[model]\npath", "model.path"),
    ("[model]\ncpu_model", "model.cpu_model"),
    ("[model]\nedgetpu_library", "model.edgetpu_library"),
    ("[mqtt]\nspool_dir", "mqtt.spool_dir"),
    ("[mqtt]\nca_file", "mqtt.ca_file"),
    ("[mqtt]\npassword", "mqtt.password"),
    ("[updates]\ntrusted_keys", "updates.trusted_keys[0]"),
]


@pytest.mark.parametrize(("line", "dotted"), NUL_KEYS, ids=[k for _, k in NUL_KEYS])
def test_a_nul_character_in_a_string_is_refused_naming_the_key(line, dotted):
    # "a\u0000b" is valid TOML; as device.state_dir or model.edgetpu_library it passed
    # check-config and then crashed `run` with "ValueError: embedded null byte".
    value = '"a\\u0000b"'
    text = f"{line} = [{value}]\n" if dotted.endswith("[0]") else f"{line} = {value}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.toml", env={})
    assert str(info.value).startswith(f"c.toml: {dotted}: ")
    assert "NUL" in str(info.value)
    if dotted == "mqtt.password":
        assert "a\\u0000b" not in str(info.value)  # a secret is never echoed


MEGABYTES = ["mqtt.spool_max_mb", "updates.max_size_mb", "events.snapshot_max_disk_mb"]


@pytest.mark.parametrize("dotted", MEGABYTES)
def test_a_size_beyond_a_terabyte_is_refused_naming_the_key(dotted):
    # 1e308 MB passed check-config, then `int(mb * 1024 * 1024)` overflowed to infinity:
    # `run` crashed at start with "OverflowError: cannot convert float infinity to int".
    with pytest.raises(ConfigError) as info:
        parse_config(_one(dotted, "1e308"), "c.toml", env={})
    assert str(info.value).startswith(f"c.toml: {dotted}: expected number > 0 and <= ")


def test_every_size_at_its_bound_is_turned_into_bytes_by_the_daemon():
    from edge_agent.config.checks import MAX_MEGABYTES
    from edge_agent.daemon.options import mqtt_settings
    from edge_agent.daemon.update_options import update_settings

    text = "".join(_one(dotted, str(MAX_MEGABYTES)) for dotted in MEGABYTES)
    config = parse_config(text, "c.toml", env={})
    assert mqtt_settings(config).spool_max_bytes == MAX_MEGABYTES << 20
    assert update_settings(config).max_file_bytes == MAX_MEGABYTES << 20
    assert config.events.snapshot_max_disk_mb == MAX_MEGABYTES


SYNTHETIC = [
    "synthetic",
    "synthetic:64x48",
    "synthetic:32x32@0.5",
    "synthetic:8192x8192@1000",
    "synthetic:1x1",
    "synthetic:31x64",
    "synthetic:64x8193",
    "synthetic:64x48@0",
    "synthetic:64x48@1000.5",
]


@pytest.mark.parametrize("source", SYNTHETIC)
def test_a_synthetic_source_passes_the_config_only_when_the_camera_takes_it(source):
    # "synthetic:1x1" passed check-config, then `run` exited 2 at start with "synthetic
    # size must be 32..8192 per side", naming no key.
    from edge_agent.capture.sources import parse_source

    try:
        parse_source(source)
        camera_takes_it = True
    except ConfigError:
        camera_takes_it = False
    text = f'[[camera]]\nsource = "{source}"\n'
    if camera_takes_it:
        assert parse_config(text, "c.toml", env={}).camera[0].source == source
    else:
        with pytest.raises(ConfigError, match=r"^c\.toml: camera\[0\]\.source: expected "):
            parse_config(text, "c.toml", env={})


@pytest.mark.parametrize(
    "scheme", ["rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"]
)
def test_every_stream_scheme_the_config_takes_is_one_the_camera_opens(scheme):
    # The config (and deploy/config.example.toml) took rtmps, udp, tcp and srt; the
    # camera refused them at start: `run` exited 2, "unsupported camera URL scheme".
    from edge_agent.capture.sources import SourceKind, parse_source

    url = f"{scheme}://cam.local:9000/live"
    config = parse_config(f'[[camera]]\nsource = "{url}"\n', "c.toml", env={})
    assert parse_source(config.camera[0].source).kind == SourceKind.STREAM


@pytest.mark.parametrize("variable", ["EDGE_AGENT_MQTT_USERNAME", "EDGE_AGENT_MQTT_PASSWORD"])
def test_an_override_that_is_not_utf8_is_refused_naming_the_variable(variable):
    # A password of raw bytes in the EnvironmentFile (Python decodes it with surrogate
    # escapes) passed check-config; run then logged a UnicodeEncodeError traceback on
    # every connection attempt and never connected.
    env = {"EDGE_AGENT_MQTT_USERNAME": "u", variable: "p\udcff\udcfe"}
    key = "mqtt." + variable.rsplit("_", 1)[1].lower()
    with pytest.raises(ConfigError) as info:
        parse_config("[mqtt]\n", "c.toml", env=env)
    assert str(info.value) == f"c.toml: {key}: ${variable} is not valid UTF-8"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[model]\nthreshold = 1{zeros}\n", "model.threshold"),
        ("[stats]\ninterval = 1{zeros}\n", "stats.interval"),
        ('[[zone]]\nname = "z"\ncamera = "cam0"\npoints = [[0, 0], [1, 0], [1, 1{zeros}]]\n',
         "zone[0].points[2][1]"),
    ],
)  # fmt: skip
def test_an_integer_too_large_for_a_float_is_refused_naming_the_key(text, key):
    # A 400-digit integer is valid TOML; turning it into a float raised OverflowError out
    # of check-config, out of run, and out of a SIGHUP reload (killing the daemon).
    with pytest.raises(ConfigError) as info:
        parse_config(text.format(zeros="0" * 400), "c.toml", env={})
    assert str(info.value).startswith(f"c.toml: {key}: expected "), str(info.value)


def test_an_integer_beyond_python_s_digit_limit_is_a_config_error(tmp_path):
    # Python refuses to parse integers of more than 4300 digits (a ValueError that is no
    # TOMLDecodeError): it escaped check-config, run and a reload as a traceback.
    path = tmp_path / "config.toml"
    path.write_text("[model]\nthreshold = 1" + "0" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}: "), str(info.value)
    # "limit (4300 digits)" on 3.11+, "limit (4300)" on 3.9/3.10's backport
    assert "limit (4300" in str(info.value) and "integer" in str(info.value)
