"""Value checks that drive config validation.

Each check knows what it expects (the text after "expected" in an error message) and
returns the normalized value, or raises :class:`Invalid`. The loader adds the file name
and the dotted key, so a check never needs to know where its value came from. Checks
are pure: no I/O, no logging.
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import re
from collections.abc import Iterable
from typing import Any, Callable

# Longest rendering of an offending value inside an error message.
_SHOW_MAX = 60
# Longest duration a setting may ask for: a year. The daemon hands these to socket,
# pipe and lock timeouts, which overflow from about 9.2e9 s (OverflowError: a worker
# load timeout of 1e10 crashed `run`, a download timeout of 1e10 killed the update
# thread); no timeout, backoff or interval here is sensibly longer than a year.
MAX_SECONDS = 365 * 24 * 3600
# Largest size in megabytes (a tebibyte): the daemon turns sizes into bytes with
# ``int(mb * 1024 * 1024)``, which 1e308 overflowed to infinity (`run` crashed at start).
MAX_MEGABYTES = 1 << 20


class Invalid(Exception):
    """A value failed a check; ``subkey`` (e.g. ``[2]``) locates it inside a list."""

    def __init__(self, message: str, subkey: str = ""):
        super().__init__(message)
        self.message = message
        self.subkey = subkey


def kind(value: Any) -> str:
    """Name the TOML type of ``value`` (used instead of the value for secrets)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def show(value: Any) -> str:
    """Render ``value`` the way it would look in TOML, shortened for messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, list):
        text = "[" + ", ".join(show(item) for item in value) + "]"
    elif isinstance(value, dict):
        return "a table"
    elif isinstance(value, (datetime.date, datetime.time)):
        text = value.isoformat()
    else:  # pragma: no cover - tomllib produces nothing else
        text = repr(value)
    if len(text) > _SHOW_MAX:
        text = text[: _SHOW_MAX - 4] + "..." + text[-1]
    return text


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``'; did you mean "x"?'`` naming the choice closest to ``word``, or "" when none
    is close (difflib's ratio >= 0.6): appended to an "unknown ..." message."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def _num(value: float) -> str:
    """Format a bound compactly: 1 not 1.0, 0.5 stays 0.5, 31536000 not 3.1536e+07."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _bounded(kind: str, fmt: Callable[[Any], str], lo: Any, hi: Any, gt: Any = None) -> str:
    """What a bounded Int/Num expects, e.g. ``integer 1..65535`` or ``number > 0``."""
    if gt is not None:
        return f"{kind} > {fmt(gt)}" + ("" if hi is None else f" and <= {fmt(hi)}")
    if lo is not None and hi is not None:
        return f"{kind} {fmt(lo)}..{fmt(hi)}"
    if lo is not None:
        return f"{kind} >= {fmt(lo)}"
    return kind


def _outside(value: float, lo: Any, hi: Any, gt: Any = None) -> bool:
    """True when ``value`` breaks one of the bounds that are set."""
    return (
        (gt is not None and value <= gt)
        or (lo is not None and value < lo)
        or (hi is not None and value > hi)
    )


class Check:
    """Base class: ``expected`` describes the accepted values; calling normalizes."""

    expected = "a value"

    def __init__(self, *, secret: bool = False):
        # Secrets are never echoed back: a typo'd password must not land in a log.
        self.secret = secret

    def __call__(self, value: Any) -> Any:
        raise NotImplementedError

    def fail(self, value: Any, subkey: str = "") -> Invalid:
        """Build the standard ``expected X, got Y`` failure for ``value``."""
        got = kind(value) if self.secret else show(value)
        return Invalid(f"expected {self.expected}, got {got}", subkey)

    def refuse_nul(self, value: str) -> None:
        """Raise :class:`Invalid` when ``value`` holds a NUL: valid TOML (``"\\u0000"``),
        but no path, host or name can carry one (the OS refuses it with a ValueError)."""
        if "\0" in value:
            got = kind(value) if self.secret else show(value)
            raise Invalid(f"expected {self.expected} without NUL characters, got {got}")


class Bool(Check):
    """true or false, nothing else (TOML has real booleans; "yes" is a string)."""

    expected = "boolean (true or false)"

    def __call__(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(value)
        return value


class Int(Check):
    """An integer, optionally bounded; floats and booleans are refused."""

    def __init__(self, lo: int | None = None, hi: int | None = None):
        super().__init__()
        self.lo, self.hi = lo, hi
        self.expected = _bounded("integer", str, lo, hi)

    def __call__(self, value: Any) -> int:
        # bool is a subclass of int in Python; TOML keeps them apart, so do we.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(value)
        if _outside(value, self.lo, self.hi):
            raise self.fail(value)
        return value


class Num(Check):
    """A finite number (int accepted, returned as float), optionally bounded."""

    def __init__(self, lo: float | None = None, hi: float | None = None, gt: float | None = None):
        super().__init__()
        self.lo, self.hi, self.gt = lo, hi, gt
        self.expected = _bounded("number", _num, lo, hi, gt)

    def __call__(self, value: Any) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.fail(value)
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits: valid TOML, no float
            raise self.fail(value) from None
        # nan/inf are valid TOML but never a sensible timeout, rate or threshold.
        if not math.isfinite(number):
            raise self.fail(value)
        if _outside(number, self.lo, self.hi, self.gt):
            raise self.fail(value)
        return number


class Seconds(Num):
    """A duration in seconds: a finite number above ``gt`` (or from ``lo``), at most a
    year (:data:`MAX_SECONDS`)."""

    def __init__(self, lo: float | None = None, gt: float | None = None):
        super().__init__(lo=lo, hi=MAX_SECONDS, gt=gt)


class Megabytes(Num):
    """A size in megabytes: a finite number above 0, at most :data:`MAX_MEGABYTES`."""

    def __init__(self) -> None:
        super().__init__(gt=0, hi=MAX_MEGABYTES)


class Text(Check):
    """A string, optionally required to be non-empty."""

    def __init__(self, *, nonempty: bool = False, secret: bool = False):
        super().__init__(secret=secret)
        self.nonempty = nonempty
        self.expected = "non-empty string" if nonempty else "string"

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str) or (self.nonempty and not value):
            raise self.fail(value)
        self.refuse_nul(value)
        return value


class OneOf(Check):
    """One of a fixed set of strings (``fold_case`` accepts any case, returns canonical)
    or integers."""

    def __init__(self, *choices: str | int, fold_case: bool = False):
        super().__init__()
        self.choices = choices
        self.fold_case = fold_case
        self.expected = "one of " + ", ".join(json.dumps(c) for c in choices)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            for choice in self.choices:
                if value == choice or (self.fold_case and value.upper() == str(choice).upper()):
                    return choice
        elif isinstance(value, int) and not isinstance(value, bool) and value in self.choices:
            return value
        raise self.fail(value)


class Pattern(Check):
    """A string matching a regular expression, described in words by ``expected``."""

    def __init__(self, regex: str, expected: str):
        super().__init__()
        self.regex = re.compile(regex)
        self.expected = expected

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str) or not self.regex.fullmatch(value):
            raise self.fail(value)
        self.refuse_nul(value)
        return value


class TopicLevel(Check):
    """One MQTT topic level and file name: no '/', wildcards, NUL, '.' or '..'."""

    def __init__(self, *, allow_empty: bool = False):
        super().__init__()
        self.allow_empty = allow_empty
        self.expected = (
            "" if allow_empty else "non-empty "
        ) + "string without '/', '+', '#', other than '.' and '..'"

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str) or (not value and not self.allow_empty):
            raise self.fail(value)
        # "." and ".." are also path components: a camera's snapshots go to
        # snapshots/{camera}/, which they would turn into the parent directory.
        if any(ch in value for ch in "/+#\0") or value in (".", ".."):
            raise self.fail(value)
        return value


class TopicPrefix(Check):
    """A topic prefix of one or more levels: no wildcards, no empty levels, no '$' start."""

    expected = (
        'topic prefix like "edge-agent" or "site/edge"'
        " (no '+', '#', empty levels or leading '$')"
    )

    def __call__(self, value: Any) -> str:
        # A leading '$' would put us among broker-reserved topics ($SYS); an empty
        # level ("a//b", "/a", "a/") is legal MQTT but always a mistake here.
        if (
            not isinstance(value, str)
            or not value
            or value.startswith("$")
            or any(ch in value for ch in "+#\0")
            or "" in value.split("/")
        ):
            raise self.fail(value)
        return value


class ListOf(Check):
    """A TOML array whose items all pass ``item``; returned as a tuple."""

    def __init__(self, item: Check, expected: str, *, unique: bool = False, sizes=None):
        super().__init__()
        self.item = item
        self.expected = expected
        self.unique = unique
        self.sizes = sizes

    def __call__(self, value: Any) -> tuple:
        if not isinstance(value, list) or (self.sizes and len(value) not in self.sizes):
            raise self.fail(value)
        out = []
        for index, entry in enumerate(value):
            try:
                norm = self.item(entry)
            except Invalid as exc:
                raise Invalid(exc.message, f"[{index}]{exc.subkey}") from None
            if self.unique and norm in out:
                raise Invalid(f"duplicate value {show(entry)}", f"[{index}]")
            out.append(norm)
        return tuple(out)


class BrokerList(Check):
    """``mqtt.hosts``: an array of ``HOST[:PORT]`` / ``[IPV6][:PORT]``, normalized."""

    expected = 'array of "HOST[:PORT]" strings'

    def __call__(self, value: Any) -> tuple:
        from edge_agent.publishing.endpoints import parse_endpoints

        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(value)
        try:
            return tuple(str(e) for e in parse_endpoints(value))
        except ValueError as exc:
            subkey, _, message = str(exc).partition(": ")
            raise Invalid(message, subkey) from None


class PollInterval(Check):
    """0 (polling off) or at least 10 s, so a fleet cannot hammer its update server."""

    expected = f"0 (no polling) or number 10..{MAX_SECONDS}"
    number = Seconds(lo=0)

    def __call__(self, value: Any) -> float:
        try:
            seconds = self.number(value)
        except Invalid:
            raise self.fail(value) from None
        if 0 < seconds < 10:
            raise self.fail(value)
        return seconds
