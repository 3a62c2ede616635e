"""Untrusted JSON in, canonical JSON out.

:func:`loads_json` parses payloads from the network with limits (size, depth, strict
UTF-8, duplicate keys, NaN/Infinity, huge integers) and raises only
:class:`ModelUpdateError`. :func:`canonical_json` gives the bytes that are signed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from edge_agent.errors import ModelUpdateError

MAX_JSON_DEPTH = 16


def canonical_json(obj: Any) -> bytes:
    """The canonical bytes that are signed: sorted keys, no whitespace, UTF-8.

    Raises:
        ModelUpdateError: ``bad_manifest`` when the object holds NaN/Infinity or
            non-JSON types.
    """
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise ModelUpdateError("bad_manifest", f"not canonical JSON: {exc}") from exc


def _json_depth(text: str) -> int:
    """Deepest bracket nesting outside strings (checked before json.loads recurses)."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    depth = deepest = 0
    for m in re.finditer(r"[\[\]{}]", stripped):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook: a duplicate key would make the signed bytes ambiguous."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_int(text: str) -> int:
    """parse_int hook: refuse integers longer than 19 digits (no bignum games)."""
    if len(text.lstrip("-")) > 19:
        raise ValueError(f"integer with {len(text)} digits")
    return int(text)


def _parse_float(text: str) -> float:
    """parse_float hook: refuse values that overflow to infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} out of range")
    return value


def _parse_constant(text: str) -> Any:
    """parse_constant hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{text} is not valid JSON")


def loads_json(
    data: bytes | bytearray | str,
    *,
    max_bytes: int,
    reason: str,
    what: str,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Parse untrusted JSON with limits.

    Args:
        data: the raw payload (bytes are decoded as strict UTF-8).
        max_bytes: refuse larger payloads before parsing.
        reason: the ModelUpdateError reason to raise on failure.
        what: what the payload is, for the message.
        max_depth: deepest allowed nesting of arrays/objects.

    Returns:
        The parsed value.

    Raises:
        ModelUpdateError: with ``reason``: too big, not UTF-8, too deep, duplicate
            keys, NaN/Infinity, integers over 19 digits, or invalid JSON.
    """
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ModelUpdateError(reason, f"{what}: not encodable as UTF-8") from exc
    if not isinstance(data, (bytes, bytearray)):
        raise ModelUpdateError(reason, f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise ModelUpdateError(reason, f"{what}: {len(data)} bytes, limit {max_bytes}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelUpdateError(reason, f"{what}: invalid UTF-8 at byte {exc.start}") from exc
    if _json_depth(text) > max_depth:
        raise ModelUpdateError(reason, f"{what}: JSON nested deeper than {max_depth}")
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except (ValueError, RecursionError) as exc:
        raise ModelUpdateError(reason, f"{what}: invalid JSON: {exc}") from exc
