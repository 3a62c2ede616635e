"""Manifest schema, names, versions and strict JSON of model releases."""

from __future__ import annotations

import copy

import pytest

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.manifest import (
    TASKS,
    build_manifest,
    parse_manifest,
    validate_file_name,
    validate_release_name,
)
from edge_agent.updates.strictjson import canonical_json, loads_json
from edge_agent.updates.versions import parse_version

SHA = "ab" * 32


def manifest(**changes):
    obj = {
        "format": 1,
        "name": "doorcam",
        "version": "1.2.3",
        "created": "2025-01-31T12:00:00Z",
        "task": "detection-yolo",
        "adapter": {"threshold": 0.4, "iou": 0.45, "top_k": 5, "resize": "letterbox"},
        "files": [
            {"name": "model_edgetpu.tflite", "role": "model", "sha256": SHA, "size": 10},
            {"name": "model.tflite", "role": "cpu_model", "sha256": SHA, "size": 9},
            {"name": "labels.txt", "role": "labels", "sha256": SHA, "size": 3},
        ],
    }
    obj.update(changes)
    return obj


# ---------------------------------------------------------------------- canonical


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]}) == (
        '{"a":[1,{"c":null,"d":"é"}],"b":1}'.encode()
    )


def test_canonical_json_is_independent_of_key_order():
    a = manifest()
    b = dict(reversed(list(copy.deepcopy(a).items())))
    assert canonical_json(a) == canonical_json(b)


def test_canonical_json_refuses_nan():
    with pytest.raises(ModelUpdateError) as e:
        canonical_json({"x": float("nan")})
    assert e.value.reason == "bad_manifest"


# ------------------------------------------------------------------- strict JSON


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"\xff\xfe{}", "invalid UTF-8"),
        (b"[" * 17 + b"]" * 17, "nested deeper"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"a": NaN}', "invalid JSON"),
        (b'{"a": 1e999}', "out of range"),
        (b'{"a": ' + b"9" * 20 + b"}", "digits"),
        (b'{"a": ', "invalid JSON"),
        (b" " * 101, "limit 100"),
    ],
)
def test_loads_json_rejects(payload, fragment):
    with pytest.raises(ModelUpdateError) as e:
        loads_json(payload, max_bytes=100, reason="bad_command", what="cmd")
    assert e.value.reason == "bad_command"
    assert fragment in str(e.value)


def test_loads_json_depth_ignores_brackets_in_strings():
    text = '{"a": "' + "[" * 50 + '"}'
    assert loads_json(text, max_bytes=1000, reason="r", what="w") == {"a": "[" * 50}


def test_loads_json_accepts_depth_limit_exactly():
    assert loads_json("[" * 16 + "]" * 16, max_bytes=100, reason="r", what="w") is not None


# ----------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    "lower, higher",
    [
        ("1.2.3", "1.2.4"),
        ("1.2.9", "1.10.0"),
        ("1.9.9", "2.0.0"),
        ("1.0.0-alpha", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
        ("1.0.0-alpha.beta", "1.0.0-beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-rc.1", "1.0.0"),
        ("2", "10"),
        (9, 10),
        ("2", "2.0.1"),
        ("1.99.0", "2"),
    ],
)
def test_version_order(lower, higher):
    assert parse_version(lower) < parse_version(higher)
    assert not parse_version(higher) <= parse_version(lower)


def test_version_equality_ignores_build_metadata_and_int_form():
    assert parse_version("1.0.0+build.1") == parse_version("1.0.0+build.2")
    assert parse_version(3) == parse_version("3") == parse_version("3.0.0")
    assert str(parse_version(7)) == "7"


@pytest.mark.parametrize(
    "value",
    ["1.2", "v1.2.3", "01.2.3", "1.2.3-", "1.2.3-01", "-1", "", " 1", True, 1.5, None, -3, [1]],
)
def test_version_rejects(value):
    with pytest.raises(ModelUpdateError) as e:
        parse_version(value)
    assert e.value.reason == "bad_manifest"


# -------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../x.tflite",
        "a/../b",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "C:\\x",
        "a\x00b",
        "",
        ".hidden",
        "x" * 129,
        "tab\tname",
        "new\nline",
        "café.tflite",
        "a..b",
        "manifest.json",
        "model.tflite.part",
        "space name",
        7,
        None,
    ],
)
def test_file_name_rejects(name):
    with pytest.raises(ModelUpdateError) as e:
        validate_file_name(name)
    assert e.value.reason == "bad_manifest"


@pytest.mark.parametrize(
    "name", ["model_edgetpu.tflite", "labels.txt", "a", "v1.2+b-c_d", "x" * 128]
)
def test_file_name_accepts(name):
    assert validate_file_name(name) == name


@pytest.mark.parametrize("name", ["a/b", "a+b", "a#b", "..", ".x", "", "x" * 65, "dör"])
def test_release_name_rejects(name):
    with pytest.raises(ModelUpdateError):
        validate_release_name(name)


# ----------------------------------------------------------------------- manifest


def test_parse_manifest_reads_every_field():
    m = parse_manifest(manifest(min_agent_version="0.1.0", description="yolo v8n"))
    assert (m.name, str(m.version), m.task) == ("doorcam", "1.2.3", "detection-yolo")
    assert m.file("model").name == "model_edgetpu.tflite"
    assert m.file("cpu_model").size == 9
    assert m.file("golden_input") is None
    assert m.total_size == 22
    assert m.adapter == {"threshold": 0.4, "iou": 0.45, "top_k": 5, "resize": "letterbox"}
    assert str(m.min_agent_version) == "0.1.0"
    assert m.label == "doorcam@1.2.3"


def _files(*entries):
    return [{"name": n, "role": r, "sha256": SHA, "size": 1} for n, r in entries]


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"format": 2}, "format 2"),
        ({"format": "1"}, "format must be 1"),
        ({"extra": 1}, "unknown manifest keys"),
        ({"name": "a/b"}, "release name"),
        ({"version": "1.2"}, "neither semver"),
        ({"created": "yesterday"}, "ISO-8601"),
        ({"task": "segmentation"}, "task must be one of"),
        ({"adapter": {"threshold": 1.5}}, "adapter.threshold"),
        ({"adapter": {"threshold": True}}, "adapter.threshold"),
        ({"adapter": {"top_k": 0}}, "adapter.top_k"),
        ({"adapter": {"top_k": 2.5}}, "adapter.top_k"),
        ({"adapter": {"resize": "crop"}}, "adapter.resize"),
        ({"adapter": {"input_std": [0]}}, "adapter.input_std"),
        ({"adapter": {"input_mean": [1, 2]}}, "1 or 3 numbers"),
        ({"adapter": {"treshold": 0.5}}, "unknown adapter setting"),
        ({"files": []}, "files must be a list"),
        ({"files": _files(("a", "labels"))}, "role 'model'"),
        ({"files": _files(("a", "model"), ("b", "model"))}, "at most once"),
        ({"files": _files(("a", "model"), ("a", "labels"))}, "duplicate file names"),
        ({"files": _files(("a", "model"), ("g", "golden_input"))}, "go together"),
        ({"files": _files(("a", "model"), ("b", "weights"))}, "role must be one of"),
        ({"files": _files(("../a", "model"))}, "unsafe file name"),
        ({"files": [{"name": "a", "role": "model", "sha256": "zz", "size": 1}]}, "64 hex"),
        ({"files": [{"name": "a", "role": "model", "sha256": SHA, "size": 0}]}, "size"),
        ({"files": [{"name": "a", "role": "model", "sha256": SHA, "size": "1"}]}, "size"),
        ({"files": [{"name": "a", "role": "model", "sha256": SHA}]}, "exactly"),
        ({"min_agent_version": "latest"}, "neither semver"),
        ({"description": "x" * 1025}, "description"),
    ],
)
def test_parse_manifest_rejects(changes, fragment):
    with pytest.raises(ModelUpdateError) as e:
        parse_manifest(manifest(**changes))
    assert e.value.reason in ("bad_manifest", "unsupported_format")
    assert fragment in str(e.value)


def test_newer_format_is_unsupported_not_bad():
    with pytest.raises(ModelUpdateError) as e:
        parse_manifest(manifest(format=2))
    assert e.value.reason == "unsupported_format"


@pytest.mark.parametrize("missing", ["name", "version", "created", "task", "files"])
def test_parse_manifest_requires(missing):
    obj = manifest()
    del obj[missing]
    with pytest.raises(ModelUpdateError, match=f"missing {missing}"):
        parse_manifest(obj)


def test_build_manifest_round_trips():
    obj = manifest()
    built = build_manifest(
        name="doorcam",
        version="1.2.3",
        created="2025-01-31T12:00:00Z",
        task="detection-yolo",
        files=list(parse_manifest(obj).files),
        adapter=obj["adapter"],
    )
    assert built == obj


def test_tasks_match_the_inference_decoder():
    postprocess = pytest.importorskip("edge_agent.inference.postprocess")
    assert set(TASKS) == {"auto", postprocess.CLASSIFICATION, postprocess.SSD, postprocess.YOLO}
