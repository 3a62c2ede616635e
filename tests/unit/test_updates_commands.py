"""Update/rollback command parsing, URL policy and topics; fuzzed with hypothesis."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.commands import (
    CommandPolicy,
    UpdateCommand,
    build_update_command,
    check_topic_level,
    command_kind,
    device_command_topic,
    group_command_topic,
    parse_rollback_command,
    parse_update_command,
)
from edge_agent.updates.urls import check_url, file_url, host_allowed

SHA = "cd" * 32
POLICY = CommandPolicy(allowed_hosts=("models.example.com", "*.cdn.example.net"))


def envelope():
    return {
        "manifest": {
            "format": 1,
            "name": "cls",
            "version": "2.0.0",
            "created": "2025-01-31T12:00:00Z",
            "task": "classification",
            "files": [
                {"name": "m.tflite", "role": "model", "sha256": SHA, "size": 100},
                {"name": "labels.txt", "role": "labels", "sha256": SHA, "size": 10},
            ],
        },
        "signature": "A" * 86 + "==",
        "key_id": "0123456789abcdef",
    }


def command(**changes):
    obj = {
        "request_id": "roll-1",
        "manifest": envelope(),
        "base_url": "https://models.example.com/cls/2.0.0/",
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not None}


def parse(obj, policy=POLICY):
    return parse_update_command(json.dumps(obj).encode(), policy)


def test_parse_inline_command():
    cmd = parse(command())
    assert cmd.request_id == "roll-1"
    assert cmd.envelope == envelope()
    assert cmd.url_for("m.tflite") == "https://models.example.com/cls/2.0.0/m.tflite"
    assert cmd.force is False


def test_parse_manifest_url_command_resolves_files_beside_it():
    cmd = parse(
        {"manifest_url": "https://models.example.com/cls/2.0.0/manifest.json?sig=1"}, POLICY
    )
    assert cmd.envelope is None
    assert cmd.url_for("labels.txt") == "https://models.example.com/cls/2.0.0/labels.txt"


def test_per_file_urls_take_precedence_and_base_url_gets_a_slash():
    cmd = parse(
        command(
            base_url="https://models.example.com/cls",
            urls={"m.tflite": "https://a.cdn.example.net/blob/123"},
        )
    )
    assert cmd.url_for("m.tflite") == "https://a.cdn.example.net/blob/123"
    assert cmd.url_for("labels.txt") == "https://models.example.com/cls/labels.txt"


def test_build_update_command_round_trips():
    payload = build_update_command(
        envelope=envelope(), base_url="https://models.example.com/x/", request_id="r", force=True
    )
    cmd = parse_update_command(payload, CommandPolicy(allow_force=True))
    assert cmd == UpdateCommand("r", envelope(), None, "https://models.example.com/x/", {}, True)


@pytest.mark.parametrize(
    "obj, reason, fragment",
    [
        (command(extra=1), "bad_command", "unknown keys"),
        (command(request_id="a" * 65), "bad_command", "request_id"),
        (command(request_id="a b"), "bad_command", "request_id"),
        (command(request_id=5), "bad_command", "request_id"),
        (command(force="yes"), "bad_command", "force must be"),
        (command(force=True), "bad_command", "force is disabled"),
        (command(manifest_url="https://models.example.com/m.json"), "bad_command", "exactly one"),
        ({"base_url": "https://models.example.com/"}, "bad_command", "exactly one"),
        (command(manifest=[1]), "bad_command", "must be a JSON object"),
        (command(manifest={"manifest": {"format": 1}}), "bad_manifest", "missing"),
        (command(base_url=None), "bad_command", "no URL for"),
        (command(base_url=5), "bad_command", "string URL"),
        (command(base_url="http://models.example.com/"), "insecure_url", "plain http"),
        (command(base_url="ftp://models.example.com/"), "insecure_url", "scheme"),
        (command(base_url="file:///etc/"), "insecure_url", "scheme"),
        (command(base_url="https://evil.example.org/"), "host_not_allowed", "evil.example.org"),
        (command(base_url="https://u:p@evil.example.org/"), "host_not_allowed", "evil"),
        (command(base_url="https:///no-host"), "bad_url", "needs a host"),
        (command(base_url="https://models.example.com/a b"), "bad_url", "spaces"),
        (command(base_url="https://models.example.com:99999/"), "bad_url", "malformed"),
        (command(urls={"../m.tflite": "https://models.example.com/x"}), "bad_command", "unsafe"),
        (command(urls={"other.bin": "https://models.example.com/x"}), "bad_command", "not in"),
        (command(urls=["x"]), "bad_command", "urls must be"),
        (command(urls={"m.tflite": 3}), "bad_command", "string URL"),
        (command(urls={"m.tflite": "https://x.example.com/m"}), "host_not_allowed", "x.example"),
    ],
)
def test_update_command_rejects(obj, reason, fragment):
    with pytest.raises(ModelUpdateError) as e:
        parse(obj)
    assert e.value.reason == reason
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"", "invalid JSON"),
        (b"[]", "must be a JSON object"),
        (b"\xc3\x28", "invalid UTF-8"),
        (b"{" * 5000, "nested deeper"),
        (b'{"force": ' + b"1" * 5000 + b"}", "digits"),
        (b" " * (256 * 1024 + 1), "limit"),
    ],
)
def test_update_command_rejects_raw_payloads(payload, fragment):
    with pytest.raises(ModelUpdateError) as e:
        parse_update_command(payload, POLICY)
    assert e.value.reason == "bad_command"
    assert fragment in str(e.value)


def test_rollback_commands():
    assert parse_rollback_command(b"").request_id is None
    assert parse_rollback_command(b"  \n").request_id is None
    assert parse_rollback_command(b'{"request_id": "rb-1"}').request_id == "rb-1"
    for bad in (b'{"request_id": "x", "to": 1}', b"[1]", b"\xff", b'{"request_id": ""}'):
        with pytest.raises(ModelUpdateError) as e:
            parse_rollback_command(bad)
        assert e.value.reason == "bad_command"


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    "host, allowed, ok",
    [
        ("models.example.com", ("models.example.com",), True),
        ("MODELS.example.com.", ("models.example.com",), True),
        ("a.cdn.example.net", ("*.cdn.example.net",), True),
        ("cdn.example.net", ("*.cdn.example.net",), False),
        ("evilcdn.example.net", ("*.cdn.example.net",), False),
        ("models.example.com.evil.org", ("models.example.com",), False),
        ("anything", (), True),
    ],
)
def test_host_allowed(host, allowed, ok):
    assert host_allowed(host, allowed) is ok


def test_http_only_with_allow_http():
    assert check_url("http://10.0.0.5:8080/x", allow_http=True).port == 8080
    with pytest.raises(ModelUpdateError) as e:
        check_url("http://10.0.0.5:8080/x")
    assert e.value.reason == "insecure_url"


def test_credentials_in_urls_are_redacted_from_messages():
    with pytest.raises(ModelUpdateError) as e:
        check_url("http://bob:s3cret@h.example/x")
    assert "s3cret" not in str(e.value) and "***@h.example" in str(e.value)


def test_file_url_quotes_names():
    assert file_url("a+b.txt", base_url="https://h/r/") == "https://h/r/a%2Bb.txt"
    with pytest.raises(ModelUpdateError):
        file_url("a", urls={})


# ------------------------------------------------------------------------- topics


def test_topics():
    subs = [
        device_command_topic("edge", "cam-1", "update"),
        device_command_topic("edge", "cam-1", "rollback"),
        group_command_topic("edge", "lobby", "update"),
        group_command_topic("edge", "lobby", "rollback"),
    ]
    assert subs == [
        "edge/cam-1/cmd/model/update",
        "edge/cam-1/cmd/model/rollback",
        "edge/group/lobby/cmd/model/update",
        "edge/group/lobby/cmd/model/rollback",
    ]
    assert [command_kind(t) for t in subs] == ["update", "rollback"] * 2
    assert command_kind("edge/cam-1/cmd/other/update") is None
    for bad in ("a/b", "+", "#", "", "group", "x" * 65):
        with pytest.raises(ValueError):
            check_topic_level(bad, "device id")


# ------------------------------------------------------------------------ fuzzing

FUZZ = settings(max_examples=550, deadline=None, suppress_health_check=list(HealthCheck))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
KEYS = ["request_id", "manifest", "manifest_url", "base_url", "urls", "force", "junk"]


def _only_model_update_error(payload, policy=POLICY):
    try:
        parse_update_command(payload, policy)
    except ModelUpdateError:
        pass
    try:
        parse_rollback_command(payload)
    except ModelUpdateError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_raw_bytes(payload):
    _only_model_update_error(payload)


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6))
def test_fuzz_command_shapes(obj):
    _only_model_update_error(json.dumps(obj).encode())


@FUZZ
@given(
    st.sampled_from(KEYS[:6] + ["manifest.manifest", "manifest.signature", "manifest.key_id"]),
    json_values,
    st.booleans(),
)
def test_fuzz_mutated_valid_commands(field, value, allow):
    obj = command()
    if field.startswith("manifest."):
        obj["manifest"][field.split(".", 1)[1]] = value
    else:
        obj[field] = value
    policy = CommandPolicy(POLICY.allowed_hosts, allow_http=allow, allow_force=allow)
    _only_model_update_error(json.dumps(obj).encode(), policy)


@FUZZ
@given(
    st.sampled_from(["format", "name", "version", "created", "task", "adapter", "files"]),
    json_values,
)
def test_fuzz_mutated_manifest_fields(field, value):
    obj = command()
    obj["manifest"]["manifest"][field] = value
    _only_model_update_error(json.dumps(obj).encode())
