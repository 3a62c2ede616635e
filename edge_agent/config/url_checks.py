"""Checks of camera sources and URLs.

Pure like :mod:`edge_agent.config.checks`: the loader names the file and the key.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from edge_agent.config.checks import Check, Invalid, show
from edge_agent.redaction import mask_credentials

# Schemes OpenCV's FFmpeg backend is routinely given for network cameras. An unknown
# scheme is almost always a typo ("rstp://"), so it is refused rather than passed on.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
# The test pattern's bounds, shared with the camera (edge_agent.capture.sources).
SYNTHETIC_SIDES = (32, 8192)
SYNTHETIC_MAX_FPS = 1000.0
_SYNTHETIC = re.compile(
    r"synthetic(?::([1-9][0-9]{0,4})x([1-9][0-9]{0,4})(?:@([0-9]+(?:\.[0-9]+)?))?)?"
)


def is_synthetic(text: str) -> bool:
    """True for the test-pattern sources "synthetic" and "synthetic:...", not file names."""
    return text == "synthetic" or text.startswith("synthetic:")


def _hostname(url: str) -> str | None:
    """The host of ``url``, or None when it has none or cannot be parsed (bad IPv6)."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def is_url(text: str) -> bool:
    """True when ``text`` has a ``scheme://`` prefix (camera sources, manifest URLs)."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def synthetic_in_bounds(match: re.Match[str] | None) -> bool:
    """True for a ``synthetic[:WxH[@FPS]]`` match within the bounds the camera takes."""
    if match is None:
        return False
    width, height, fps = match.groups()
    low, high = SYNTHETIC_SIDES
    sides_ok = width is None or (low <= int(width) <= high and low <= int(height) <= high)
    return sides_ok and (fps is None or 0 < float(fps) <= SYNTHETIC_MAX_FPS)


class CameraSource(Check):
    """A V4L2 index, device/file path, stream URL or ``synthetic[:WxH[@FPS]]``.

    Index strings ("0") are returned as int so the daemon sees one type per meaning.
    """

    expected = (
        'camera index (integer >= 0), device or file path, stream URL or "synthetic[:WxH[@FPS]]"'
    )

    def __call__(self, value: Any) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise self.fail(value)
            return value
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            raise self.fail(value)
        if value.isascii() and value.isdigit():
            return int(value)
        if is_synthetic(value):
            if not synthetic_in_bounds(_SYNTHETIC.fullmatch(value)):
                raise Invalid(
                    'expected "synthetic" or "synthetic:WxH[@FPS]" (e.g. "synthetic:640x480@15"),'
                    f" sides {SYNTHETIC_SIDES[0]}..{SYNTHETIC_SIDES[1]}, FPS > 0 and <= "
                    f"{SYNTHETIC_MAX_FPS:g}, got {show(value)}"
                )
            return value
        if is_url(value):
            scheme = value.split("://", 1)[0].lower()
            if scheme not in STREAM_SCHEMES or not _hostname(value):
                schemes = ", ".join(STREAM_SCHEMES[:-1]) + " or " + STREAM_SCHEMES[-1]
                shown = show(mask_credentials(value))
                raise Invalid(f"expected stream URL ({schemes}) with a host, got {shown}")
        return value


class HttpUrl(Check):
    """An http(s) URL with a host, or "" (unset)."""

    expected = 'http:// or https:// URL with a host, or ""'

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(value)
        web = value.startswith(("http://", "https://"))
        if value and not (web and _hostname(value)):
            raise Invalid(f"expected {self.expected}, got {show(mask_credentials(value))}")
        return value
