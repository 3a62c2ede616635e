"""Model release manifests: file and release names, and the manifest schema.

A release is a directory holding the model file(s), labels, optional golden tensors
for a health check, and ``manifest.json`` (a signed envelope, see ``signing.py``).
The manifest proper is::

    {"format": 1, "name": "doorcam-detector", "version": "1.2.3",
     "created": "2025-01-31T12:00:00Z", "task": "detection-yolo",
     "adapter": {"threshold": 0.4, "iou": 0.45},
     "files": [{"name": "model_edgetpu.tflite", "role": "model",
                "sha256": "<64 hex>", "size": 4090937}, ...],
     "min_agent_version": "0.1.0",
     "compatible": ["rpi4-coral-usb"], "devices": ["door-1"], "groups": ["lobby"],
     "replaces": ["blobs"]}

The last four are the release's targets, all optional (see ``targets.py``): the device
types it fits (matched against ``device.type``), the device ids and groups it is meant
for, and the model names it may replace on a box running another model.

Everything arriving from the network goes through ``strictjson.loads_json`` and
:func:`parse_manifest` (every field checked), which raise only :class:`ModelUpdateError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Union

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.versions import Version, parse_version

FORMAT = 1
MANIFEST_FILE = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024
MAX_FILES = 8
MAX_FILE_SIZE = 1 << 40

ROLES = ("model", "cpu_model", "labels", "golden_input", "golden_output")
# Kept in step with edge_agent.inference.postprocess (a unit test checks it).
TASKS = ("auto", "classification", "detection-ssd", "detection-yolo")
RESIZE_MODES = ("auto", "stretch", "letterbox")

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_RELEASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Names a release may not use for its files: the envelope, and anything the store
# and the downloader write beside them.
_RESERVED = {MANIFEST_FILE, "manifest.sig"}

_TOP_KEYS = {
    "format",
    "name",
    "version",
    "created",
    "task",
    "adapter",
    "files",
    "min_agent_version",
    "description",
    "golden_tolerance",
    "compatible",
    "devices",
    "groups",
    "replaces",
}
TARGET_KEYS = ("compatible", "devices", "groups", "replaces")
MAX_TARGETS = 64
_FILE_KEYS = {"name", "role", "sha256", "size"}


# --------------------------------------------------------------------------- names


def validate_file_name(name: Any, *, reason: str = "bad_manifest") -> str:
    """Check a release file name: one plain path component, safe everywhere.

    Allowed: ``[A-Za-z0-9][A-Za-z0-9._+-]*``, at most 128 chars, no ``..``, not a
    reserved name, not ending in ``.part``. This rejects traversal, separators,
    absolute paths, NUL, control and non-ASCII characters by construction.

    Raises:
        ModelUpdateError: with ``reason``.
    """
    if not isinstance(name, str):
        raise ModelUpdateError(reason, f"file name must be a string, got {type(name).__name__}")
    if not _FILE_NAME.fullmatch(name) or ".." in name:
        raise ModelUpdateError(reason, f"unsafe file name {name!r:.80}")
    if name in _RESERVED or name.endswith(".part"):
        raise ModelUpdateError(reason, f"file name {name!r} is reserved")
    return name


def validate_release_name(name: Any, *, reason: str = "bad_manifest") -> str:
    """Check a release name: safe as a directory and an MQTT topic level.

    Raises:
        ModelUpdateError: with ``reason``.
    """
    if not isinstance(name, str) or not _RELEASE_NAME.fullmatch(name) or ".." in name:
        raise ModelUpdateError(
            reason, f"release name must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}: {name!r:.80}"
        )
    return name


# ------------------------------------------------------------------------ manifest

Number = Union[int, float]


class FileEntry(NamedTuple):
    """One file of a release."""

    name: str
    role: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A validated manifest.

    Attributes:
        raw: the manifest object exactly as signed (canonicalize it to re-verify).
    """

    name: str
    version: Version
    created: str
    task: str
    adapter: Mapping[str, Any]
    files: tuple[FileEntry, ...]
    min_agent_version: Version | None = None
    description: str = ""
    golden_tolerance: float | None = None
    compatible: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def file(self, role: str) -> FileEntry | None:
        """The file with a role, or None."""
        return next((f for f in self.files if f.role == role), None)

    @property
    def total_size(self) -> int:
        """Sum of the file sizes in bytes."""
        return sum(f.size for f in self.files)

    @property
    def label(self) -> str:
        """``name@version`` for messages."""
        return f"{self.name}@{self.version}"


def _number(obj: Mapping[str, Any], key: str, lo: float, hi: float, *, integer: bool) -> Number:
    """A bounded number field of the adapter settings."""
    value = obj[key]
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise ModelUpdateError(
            "bad_manifest", f"adapter.{key} must be {kind} in [{lo}, {hi}], got {value!r:.40}"
        )
    return value


def _adapter(value: Any) -> dict[str, Any]:
    """Validate the optional adapter settings object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ModelUpdateError("bad_manifest", "adapter must be an object")
    out: dict[str, Any] = {}
    for key in value:
        if key in ("threshold", "iou"):
            out[key] = _number(value, key, 0.0, 1.0, integer=False)
        elif key in ("top_k", "max_detections"):
            out[key] = _number(value, key, 1, 1000, integer=True)
        elif key == "resize":
            if value[key] not in RESIZE_MODES:
                raise ModelUpdateError(
                    "bad_manifest", f"adapter.resize must be one of {RESIZE_MODES}"
                )
            out[key] = value[key]
        elif key in ("input_mean", "input_std"):
            seq = value[key]
            if not isinstance(seq, list) or len(seq) not in (1, 3):
                raise ModelUpdateError(
                    "bad_manifest", f"adapter.{key} must be a list of 1 or 3 numbers"
                )
            lo = 1e-6 if key == "input_std" else -1e6
            out[key] = [_number({key: v}, key, lo, 1e6, integer=False) for v in seq]
        else:
            raise ModelUpdateError("bad_manifest", f"unknown adapter setting {key!r:.40}")
    return out


def _file_entry(value: Any, index: int) -> FileEntry:
    """Validate one element of ``files``."""
    where = f"files[{index}]"
    if not isinstance(value, dict) or set(value) != _FILE_KEYS:
        raise ModelUpdateError(
            "bad_manifest", f"{where} must be an object with exactly {sorted(_FILE_KEYS)}"
        )
    name = validate_file_name(value["name"])
    role = value["role"]
    if role not in ROLES:
        raise ModelUpdateError(
            "bad_manifest", f"{where}.role must be one of {ROLES}, got {role!r:.40}"
        )
    sha = value["sha256"]
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha.lower()):
        raise ModelUpdateError("bad_manifest", f"{where}.sha256 must be 64 hex digits")
    size = value["size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_FILE_SIZE:
        raise ModelUpdateError(
            "bad_manifest", f"{where}.size must be an integer in [1, 2^40], got {size!r:.40}"
        )
    return FileEntry(name, role, sha.lower(), size)


def _files(value: Any) -> tuple[FileEntry, ...]:
    """Validate ``files``: unique names, unique roles, exactly one model."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FILES:
        raise ModelUpdateError("bad_manifest", f"files must be a list of 1..{MAX_FILES} entries")
    entries = tuple(_file_entry(v, i) for i, v in enumerate(value))
    names = [e.name for e in entries]
    roles = [e.role for e in entries]
    if len(set(names)) != len(names):
        raise ModelUpdateError("bad_manifest", "duplicate file names")
    if len(set(roles)) != len(roles):
        raise ModelUpdateError("bad_manifest", "each role may appear at most once")
    if "model" not in roles:
        raise ModelUpdateError("bad_manifest", "exactly one file must have role 'model'")
    if ("golden_input" in roles) != ("golden_output" in roles):
        raise ModelUpdateError("bad_manifest", "golden_input and golden_output go together")
    return entries


def _short_string(obj: Mapping[str, Any], key: str, limit: int) -> str:
    """A required string field of bounded length."""
    value = obj.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= limit or not value.isprintable():
        raise ModelUpdateError(
            "bad_manifest", f"{key} must be a printable string of 1..{limit} chars"
        )
    return value


def _target_list(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """An optional target list: 1..64 unique names, each one safe topic level."""
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_TARGETS:
        raise ModelUpdateError("bad_manifest", f"{key} must be a list of 1..{MAX_TARGETS} names")
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not _RELEASE_NAME.fullmatch(name):
            raise ModelUpdateError(
                "bad_manifest", f"{key}: {name!r:.80} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}"
            )
    if len(set(names)) != len(names):
        raise ModelUpdateError("bad_manifest", f"{key} lists a name twice")
    return names


def parse_manifest(obj: Any) -> Manifest:
    """Validate a manifest object (the signed part of the envelope).

    Args:
        obj: the parsed JSON object.

    Returns:
        The Manifest.

    Raises:
        ModelUpdateError: ``unsupported_format`` for a newer format, else
            ``bad_manifest`` naming the offending field.
    """
    if not isinstance(obj, dict):
        raise ModelUpdateError("bad_manifest", "manifest must be a JSON object")
    fmt = obj.get("format")
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT:
        raise ModelUpdateError(
            "unsupported_format", f"manifest format {fmt}; this agent reads {FORMAT}"
        )
    if fmt != FORMAT or isinstance(fmt, bool):
        raise ModelUpdateError("bad_manifest", f"format must be {FORMAT}")
    unknown = set(obj) - _TOP_KEYS
    if unknown:
        # Key names are attacker text: quote a few, shortened, never the whole payload.
        shown = [k[:40] for k in sorted(unknown)[:5]]
        raise ModelUpdateError("bad_manifest", f"unknown manifest keys {shown}")
    for key in ("name", "version", "created", "task", "files"):
        if key not in obj:
            raise ModelUpdateError("bad_manifest", f"missing {key}")
    created = _short_string(obj, "created", 64)
    try:
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ModelUpdateError(
            "bad_manifest", f"created is not an ISO-8601 time: {created!r}"
        ) from exc
    task = obj["task"]
    if task not in TASKS:
        raise ModelUpdateError("bad_manifest", f"task must be one of {TASKS}, got {task!r:.40}")
    description = obj.get("description", "")
    if not isinstance(description, str) or len(description) > 1024:
        raise ModelUpdateError("bad_manifest", "description must be a string of at most 1024 chars")
    tolerance = obj.get("golden_tolerance")
    if tolerance is not None:
        tolerance = _number(obj, "golden_tolerance", 0, 1e6, integer=False)
    min_agent = obj.get("min_agent_version")
    return Manifest(
        name=validate_release_name(obj["name"]),
        version=parse_version(obj["version"]),
        created=created,
        task=task,
        adapter=_adapter(obj.get("adapter")),
        files=_files(obj["files"]),
        min_agent_version=None if min_agent is None else parse_version(min_agent),
        description=description,
        golden_tolerance=tolerance,
        compatible=_target_list(obj, "compatible"),
        devices=_target_list(obj, "devices"),
        groups=_target_list(obj, "groups"),
        replaces=_target_list(obj, "replaces"),
        raw=obj,
    )


def build_manifest(
    *,
    name: str,
    version: str | int,
    created: str,
    task: str,
    files: list[FileEntry],
    adapter: Mapping[str, Any] | None = None,
    min_agent_version: str | None = None,
    description: str = "",
    golden_tolerance: float | None = None,
    targets: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Assemble a manifest object and validate it (used by ``pack``).

    Args:
        targets: ``compatible``, ``devices``, ``groups``, ``replaces`` lists; empty
            ones are left out (no restriction).

    Raises:
        ModelUpdateError: ``bad_manifest`` when any field is invalid.
    """
    obj: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "created": created,
        "task": task,
        "files": [f._asdict() for f in files],
    }
    if adapter:
        obj["adapter"] = dict(adapter)
    if min_agent_version is not None:
        obj["min_agent_version"] = min_agent_version
    if description:
        obj["description"] = description
    if golden_tolerance is not None:
        obj["golden_tolerance"] = golden_tolerance
    for key, names in (targets or {}).items():
        if key not in TARGET_KEYS:
            raise ModelUpdateError("bad_manifest", f"unknown target {key!r}")
        if names:
            obj[key] = list(names)
    parse_manifest(obj)
    return obj
