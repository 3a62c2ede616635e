"""URL policy for release downloads: scheme, host allowlist, credentials.

Every URL a device fetches (manifest URL, base URL, per-file URL, each redirect hop)
passes :func:`check_url`. ``user:password@`` in a URL becomes HTTP Basic auth for that
host and is redacted from every message (:func:`edge_agent.redaction.mask_credentials`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

from edge_agent.errors import ModelUpdateError
from edge_agent.redaction import mask_credentials


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """True when ``host`` matches the allowlist (empty list: everything)."""
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*.") and host.endswith(entry[1:]) and len(host) > len(entry) - 1:
            return True
        if host == entry:
            return True
    return False


def check_url(
    url: object, *, allowed_hosts: Sequence[str] = (), allow_http: bool = False
) -> SplitResult:
    """Validate a download URL against the scheme policy and the allowlist.

    Returns:
        The split URL.

    Raises:
        ModelUpdateError: ``bad_url`` (malformed, no host, control characters),
            ``insecure_url`` (not https, or http without allow_http),
            ``host_not_allowed``.
    """
    if not isinstance(url, str) or not 0 < len(url) <= 2048:
        raise ModelUpdateError("bad_url", "URL must be a string of 1..2048 chars")
    shown = mask_credentials(url)
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ModelUpdateError(
            "bad_url", f"URL has spaces or non-ASCII/control chars: {shown!r:.80}"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise ModelUpdateError("bad_url", f"malformed URL {shown!r:.80}: {exc}") from exc
    if parts.scheme not in ("https", "http"):
        raise ModelUpdateError("insecure_url", f"URL scheme must be https: {shown:.80}")
    if parts.scheme == "http" and not allow_http:
        raise ModelUpdateError("insecure_url", f"plain http is not allowed: {shown:.80}")
    if not host:
        raise ModelUpdateError("bad_url", f"URL needs a host: {shown:.80}")
    if port == 0:
        raise ModelUpdateError("bad_url", f"URL port 0: {shown:.80}")
    if not host_allowed(host, allowed_hosts):
        raise ModelUpdateError("host_not_allowed", f"host {host} is not in the allowlist")
    return parts


def basic_auth(parts: SplitResult) -> str | None:
    """``Authorization`` header value for credentials in a URL, or None."""
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def file_url(
    name: str,
    *,
    urls: Mapping[str, str] | None = None,
    base_url: str | None = None,
    manifest_url: str | None = None,
) -> str:
    """Where a release file is fetched from.

    Precedence: an explicit per-file URL, then ``base_url`` + name, then the
    directory of ``manifest_url`` + name.

    Raises:
        ModelUpdateError: ``bad_command`` when no source is given for the file.
    """
    if urls and name in urls:
        return urls[name]
    base = base_url or manifest_url
    if not base:
        raise ModelUpdateError("bad_command", f"no URL for {name}: give base_url or urls")
    if base_url and not base.endswith("/"):
        base += "/"
    return urljoin(base, quote(name))
