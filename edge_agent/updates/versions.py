"""Release versions: semver ``MAJOR.MINOR.PATCH[-pre][+build]`` or a plain integer."""

from __future__ import annotations

import re
from functools import total_ordering
from typing import Any

from edge_agent.errors import ModelUpdateError

_INT_VERSION = re.compile(r"0|[1-9][0-9]{0,17}")
_IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)


@total_ordering
class Version:
    """A release version: semver ``MAJOR.MINOR.PATCH[-pre][+build]`` or an integer.

    Ordering follows semver precedence (build metadata ignored). An integer ``N``
    orders like ``N.0.0``. ``str()`` gives the text used as the directory name.
    """

    __slots__ = ("text", "_key")

    def __init__(self, text: str, key: tuple[Any, ...]):
        self.text = text
        self._key = key

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Version({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key == other._key

    def __lt__(self, other: Version) -> bool:
        return self._key < other._key

    def __hash__(self) -> int:
        return hash(self._key)


def parse_version(value: Any, *, reason: str = "bad_manifest") -> Version:
    """Parse a version from a manifest value (int, digit string, or semver string).

    Raises:
        ModelUpdateError: with ``reason`` when the value is not a valid version.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 10**18:
            raise ModelUpdateError(reason, f"version {value} out of range")
        value = str(value)
    if not isinstance(value, str) or len(value) > 64:
        raise ModelUpdateError(
            reason, f"version must be a semver string or an integer, got {value!r:.80}"
        )
    if _INT_VERSION.fullmatch(value):
        return Version(value, (int(value), 0, 0, (1,)))
    m = _SEMVER.fullmatch(value)
    if not m:
        raise ModelUpdateError(
            reason, f"version {value!r} is neither semver (1.2.3) nor an integer"
        )
    pre = m.group(4)
    if pre is None:
        pre_key: tuple[Any, ...] = (1,)  # a release sorts after all its pre-releases
    else:
        ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
        pre_key = (0, ids)
    return Version(value, (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre_key))
