"""hypothesis strategies for model command payloads, as an attacker would send them.

:func:`payload_strategy` gives ``(category, command, payload)`` triples for the
``model/update`` and ``model/rollback`` command topics: random bytes, invalid UTF-8,
payloads around and beyond the 256 KiB cap, JSON nested thousands deep, NaN/huge
numbers/duplicate keys/byte-order marks, and, most of the time, a well-formed command
with zero to two fields made wrong: every field with the wrong type or a hostile value,
file names with separators and traversal, URLs with forbidden schemes, hosts, ports and
credentials, and manifests unsigned, tampered, signed by a stranger, or validly signed
but carrying a bad field; now and then a command name nobody implements. Used by
tests/faults/test_security_fuzz.py.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.commands import MAX_COMMAND_BYTES
from edge_agent.updates.signing import key_id, sign_manifest

# ------------------------------------------------------------------ value pools
# hypothesis picks from these pools (one draw per field) rather than building values
# leaf by leaf: ~20 draws per payload keeps 10,000 payloads within seconds, and
# shrinking still walks towards the first, simplest entry of each pool.

JUNK = [
    None, True, False, 0, -1, 2**63, 10**19, 1.5, -0.0, 1e308, "", "x", "\x00", "\ud800",
    "\u202e", "A" * 1000, [], [1, 2], [[[]]], list(range(50)), {}, {"a": 1}, {"": None},
    {"k" * 50: "v"}, {"manifest": {}}, "null", "true", "{}", "\n\r\t", "../", "%s%n",
]  # fmt: skip
INVALID_UTF8 = [
    b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80", b"\xc3",
]  # fmt: skip
UNSAFE_NAMES = [
    "..", ".", "../model.tflite", "../../etc/passwd", "/etc/passwd", "a/b.tflite",
    "a\\b.tflite", "..\\..\\x", "model.tflite/", "./model.tflite", "model.tflite\x00.txt",
    "manifest.json", "model.tflite.part", "", " model.tflite", "m\u00f6del.tflite",
    "C:\\Windows\\x", "%2e%2e%2fx", "model..tflite", "~/.ssh/id_rsa", "x" * 129, "-rf",
    "\u202emodel.tflite", ".hidden", "model.tflite\n", "\ud800.tflite",
]  # fmt: skip
URL_NAMES = ["model.tflite", "labels.txt"] + UNSAFE_NAMES  # keys of "urls"
FILE_NAMES = URL_NAMES + JUNK
SCHEMES = [
    "https", "http", "ftp", "file", "gopher", "javascript", "data", "ws", "HTTPS", "",
    "hxxps", "https+unix", "sftp", "jar:https",
]  # fmt: skip
HOSTS = [
    "127.0.0.1", "127.0.0.1:1", "localhost", "evil.example", "127.0.0.1.evil.example",
    "evil.example#@127.0.0.1", "[::1]", "0x7f.0.0.1", "2130706433", "169.254.169.254",
    "", "user:pw@127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:-1",
    "ex ample.com", "exam\nple.com", "127.0.0.1\\@evil.example", "*.example", "%31%32%37.0.0.1",
]  # fmt: skip
PATHS = [
    "/r/cls/2/", "/", "/../../etc/passwd", "/%2e%2e/x", "//evil.example/x", "?x", "#f", "",
    "/m\u00f6del", "/" + "a" * 3000,
]  # fmt: skip
REQUEST_IDS = ["rollout-42", "a", "A.b:c-1_2", "x" * 64, "x" * 65, "a/b", "a+b", "#", "id\nnext"]
REQUEST_IDS += ["\u00e9", "rid\x00", "", " rid"] + JUNK
GOOD_HASH = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
MANIFEST_FIELDS = {
    "format": [1, 2, 0, "1", 1.0] + JUNK,
    "name": ["cls", "..", "a/b", "x" * 65, "CON", "-x"] + JUNK,
    "version": ["2", "1.2.3", 10**18, -1, "1.2", "1.2.3-../x", "01", "1.2.3+\u00e9"] + JUNK,
    "created": ["2025-01-31T12:00:00Z", "yesterday", "2025-13-45T99:00:00Z"] + JUNK,
    "task": ["classification", "detection-ssd", "rm -rf", "auto"] + JUNK,
    "adapter": [{}, {"threshold": 0.5}, {"threshold": 2}, {"top_k": 0}, {"evil": 1}] + JUNK,
    "min_agent_version": ["0.0.1", "999.0.0"] + JUNK,
    "description": ["ok", "d" * 2000] + JUNK,
}
FILE_FIELDS = {
    "name": FILE_NAMES,
    "role": ["model", "labels", "cpu_model", "golden_input", "firmware"] + JUNK,
    "sha256": [GOOD_HASH, "0" * 63, "g" * 64, GOOD_HASH.upper()] + JUNK,
    "size": [4096, 1, 0, -1, 2**41, True, 1.5] + JUNK,
}
WRAPS = ["trusted", "unsigned", "foreign", "tampered", "bare", "garbage", "junk"]
DAMAGES = ["none"] * 16 + ["utf8", "truncate", "bom", "duplicate"]
ONE_IN_SIX = [False] * 5 + [True]
ONE_IN_TWENTY = [False] * 19 + [True]


SIGNATURES = ["", "AAAA", "!!", "A" * 88, "A" * 300] + JUNK
EXTRA_KEYS = ["shell", "__proto__", "Manifest", "request_id "]
FORCE = [True, False, "true", 1, None]
_PICKS: dict[int, tuple[list, st.SearchStrategy]] = {}


def pick(pool: list) -> st.SearchStrategy:
    """One draw from a module-level pool (strategies cached: building them is not free)."""
    if id(pool) not in _PICKS:
        _PICKS[id(pool)] = (pool, st.sampled_from(pool))
    return _PICKS[id(pool)][1]


GOOD_URL = "https://127.0.0.1:1/r/cls/2/"  # allowed; nothing listens on port 1


@st.composite
def urls(draw) -> Any:
    """A URL from scheme x host x path (each part valid about half the time), or junk."""
    if draw(pick(ONE_IN_SIX)):
        return draw(pick(JUNK))
    parts = []
    for pool, good in ((SCHEMES, "https"), (HOSTS, "127.0.0.1:1"), (PATHS, "/r/cls/2/")):
        parts.append(draw(pick(pool)) if draw(st.booleans()) else good)
    return "{}://{}{}".format(*parts)


def valid_manifest() -> dict:
    """A manifest that parses: what the mutations start from."""
    return {
        "format": 1,
        "name": "cls",
        "version": "2",
        "created": "2025-01-31T12:00:00Z",
        "task": "classification",
        "files": [{"name": "model.tflite", "role": "model", "sha256": GOOD_HASH, "size": 4096}],
    }


@st.composite
def manifests(draw) -> dict:
    """A valid manifest with 0-2 fields (or file entry fields) made wrong."""
    obj = valid_manifest()
    for _ in range(draw(st.integers(0, 2))):
        what = draw(pick(MUTABLE_MANIFEST))
        if what == "files" and isinstance(obj.get("files"), list) and obj["files"]:
            entry = dict(obj["files"][0])
            key = draw(pick(FILE_KEYS))
            entry[key] = draw(pick(FILE_FIELDS[key]))
            obj["files"] = draw(st.sampled_from([[entry], [obj["files"][0], entry], []]))
        elif what == "extra":
            obj[draw(pick(EXTRA_KEYS))] = draw(pick(JUNK))
        elif what == "drop":
            obj.pop(draw(st.sampled_from(sorted(obj))), None)
        elif what in MANIFEST_FIELDS:
            obj[what] = draw(pick(MANIFEST_FIELDS[what]))
    return obj


MUTABLE_MANIFEST = [*MANIFEST_FIELDS, "files", "files", "extra", "drop"]
FILE_KEYS = list(FILE_FIELDS)
URLS = urls()
MANIFESTS = manifests()


@st.composite
def envelopes(draw, keys) -> Any:
    """A manifest wrapped as an attacker might: unsigned, tampered, foreign, garbage."""
    manifest = draw(MANIFESTS)
    how = draw(pick(WRAPS))
    if how == "bare":
        return manifest
    if how == "unsigned":
        return {"manifest": manifest}
    if how == "junk":
        return draw(pick(JUNK))
    if how == "garbage":
        return {
            "manifest": manifest,
            "signature": draw(pick(SIGNATURES)),
            "key_id": draw(st.sampled_from([key_id(keys.trusted.public_key()), "zz"])),
        }
    try:
        env = sign_manifest(manifest, keys.untrusted if how == "foreign" else keys.trusted)
    except ModelUpdateError:  # not canonical JSON (a lone surrogate): no signer makes it
        return {"manifest": manifest}
    if how == "tampered":
        env["manifest"] = {**manifest, "version": "999"}
    return env


COMMAND_MUTATIONS = ["request_id", "manifest_url", "base_url", "urls", "force", "extra", "drop"]
COMMAND_MUTATIONS += ["both", "neither"]


@st.composite
def commands(draw, envelope_strategy: st.SearchStrategy) -> dict:
    """A well-formed update command (inline or by URL) with 0-2 fields made wrong."""
    obj: dict[str, Any] = {"request_id": "rollout-42"}
    if draw(st.booleans()):
        obj.update(manifest=draw(envelope_strategy), base_url=GOOD_URL)
    else:
        obj["manifest_url"] = draw(URLS) if draw(st.booleans()) else GOOD_URL + "manifest.json"
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        what = draw(pick(COMMAND_MUTATIONS))
        if what == "request_id":
            obj[what] = draw(pick(REQUEST_IDS))
        elif what in ("manifest_url", "base_url"):
            obj[what] = draw(URLS)
        elif what == "urls":
            obj[what] = (
                {draw(pick(URL_NAMES)): draw(URLS)} if draw(st.booleans()) else draw(pick(JUNK))
            )
        elif what == "force":
            obj[what] = draw(pick(FORCE))
        elif what == "extra":
            obj[draw(pick(EXTRA_KEYS))] = draw(pick(JUNK))
        elif what == "drop":
            obj.pop(draw(st.sampled_from(sorted(obj))), None)
        elif what == "both":
            obj.update(manifest=draw(envelope_strategy), manifest_url=draw(URLS))
        else:
            obj.pop("manifest", None), obj.pop("manifest_url", None)
    return obj


def nested(depth: int, kind: str) -> bytes:
    """JSON nested ``depth`` deep, optionally inside a command field."""
    core = "[" * depth + "]" * depth if kind != "objects" else '{"a":' * depth + "1" + "}" * depth
    if kind == "in-manifest":
        return ('{"request_id":"deep","manifest":' + core + "}").encode()
    return core.encode()


def encode(draw, obj: Any) -> bytes:
    """Serialize like an operator tool would, then maybe break the bytes."""
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()), allow_nan=False)
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8
    # Index 0 is what hypothesis favours and shrinks to: there, the bytes stay intact.
    damage = draw(pick(DAMAGES))
    if damage == "utf8" and data:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(pick(INVALID_UTF8)) + data[at:]
    elif damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "duplicate" and data.startswith(b"{") and len(data) > 2:
        data = b'{"request_id":"a","request_id":"b",' + data[1:]  # duplicate key
    return data


def payload_strategy(keys) -> st.SearchStrategy:
    """Payloads whose signed manifests use ``keys`` (built once per test)."""
    return payloads(commands(envelopes(keys)))


CATEGORIES = ["command"] * 14 + ["rollback"] * 2
CATEGORIES += ["bytes", "utf8", "huge", "deep", "numbers", "long-text", "topic"]
UNKNOWN_COMMANDS = [
    "model/updte", "model/update/now", "model", "shell", "model/rollback/../update",
    "../model/update", "model/Update", "camera/restart", "model/update " + "x" * 200,
]  # fmt: skip
LONG_PLACES = ["key", "url", "name", "version", "manifest-key", "rollback-key"]
LONG_TEXT = "k" * 200_000 + "\n2025-01-01 00:00:00 ERROR forged log line"


@st.composite
def payloads(draw, command_strategy: st.SearchStrategy) -> tuple[str, str, bytes]:
    """(category, command, payload): ``command`` is the topic's part after ``/cmd/``."""
    category = draw(pick(CATEGORIES))
    command = "model/rollback" if category == "rollback" else "model/update"
    if draw(pick(ONE_IN_TWENTY)):  # now and then the other command's topic
        command = "model/rollback" if command == "model/update" else "model/update"
    if category == "topic":  # a command name nobody implements (a typo, a probe)
        name = draw(pick(UNKNOWN_COMMANDS))
        return category, name, b'{"request_id":"t","manifest_url":"https://127.0.0.1:1/m"}'
    if category == "command":
        return category, command, encode(draw, draw(command_strategy))
    if category == "rollback":
        obj = {"request_id": draw(pick(REQUEST_IDS))} if draw(st.booleans()) else draw(pick(JUNK))
        return category, command, encode(draw, obj)
    if category == "bytes":
        return category, command, draw(st.binary(max_size=64))
    if category == "utf8":
        bad = draw(pick(INVALID_UTF8))
        return category, command, b'{"request_id":"' + bad + b'","manifest_url":"https://x/"}'
    if category == "huge":
        size = draw(
            st.sampled_from([MAX_COMMAND_BYTES - 64, MAX_COMMAND_BYTES + 1, 2 * MAX_COMMAND_BYTES])
        )
        return category, command, b'{"request_id":"huge","x":"' + b"a" * (size - 30) + b'"}'
    if category == "deep":
        depth = draw(st.sampled_from([17, 64, 1000, 100_000, 16]))
        return (
            category,
            command,
            nested(depth, draw(st.sampled_from(["arrays", "objects", "in-manifest"]))),
        )
    if category == "long-text":  # attacker text in places a message might quote
        where = draw(pick(LONG_PLACES))
        obj = {
            "key": {LONG_TEXT: 1},
            "url": {"manifest_url": "https://127.0.0.1/" + LONG_TEXT},
            "name": {"manifest_url": "https://127.0.0.1/m", "urls": {LONG_TEXT: "https://x/"}},
            "version": {"manifest": {"manifest": {"format": 1, "version": LONG_TEXT}}},
            "manifest-key": {"manifest": {"manifest": {"format": 1, LONG_TEXT: 1}}},
            "rollback-key": {"request_id": "r", LONG_TEXT: 1},
        }[where]
        return category, command, json.dumps(obj).encode()
    number = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 40, "-0"]))
    return category, command, f'{{"request_id":"n","force":{number}}}'.encode()
