"""Masking of secrets in URLs and in messages that quote URLs: one rule for every caller.

Cameras, the config loader, model-update downloads and the tools all show URLs in logs,
errors and the retained status, which every subscriber of the broker reads. A secret a
URL can carry is masked wherever it sits:

- ``user:password@`` up to the last ``@`` of the authority (passwords may hold ``@``,
  and spaces, which FFmpeg sends as written);
- a password holding an unencoded ``/``, ``?`` or ``#`` (no client can use such a URL,
  but the error that says so quotes it);
- a bare ``token@host`` (a user name alone is often an access token);
- secret query parameters (``?pwd=``, ``&token=``, pre-signed URLs' ``X-Amz-Signature=``,
  ``X-Amz-Credential=``, ``sig=``).

When in doubt, more is masked: a path holding ``@`` after credentials loses its host in
the message (``https://bob:***@y`` for ``https://bob:pw@h/x@y``), which beats a password
in the clear. Not recognized: ``host:port/path@...`` is read as such, so a password of
digits, then an unencoded delimiter (``admin:12/x@cam``), is taken for a port and a
path; and a password holding both a space and an unencoded delimiter.
"""

from __future__ import annotations

import re

MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# The plain case: user ":" password "@", neither holding a delimiter nor whitespace but
# the space; greedy up to the last "@". (One character class each: no nested repeats
# to backtrack through on a long run of spaces.)
_PLAIN = re.compile(r"(?P<user>[^:/?#@\t\n\r\f\v]*):[^/?#\t\n\r\f\v]*@")
_BARE = re.compile(r"[^:/?#@\s]+@")
_PORT = re.compile(r"[0-9]{1,5}")
_SPACE = re.compile(r"\s")
_DELIMITER = re.compile(r"[/?#]")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9.]+[-_])*(?:password|passwd|pwd|pass|token|access_token|"
    r"api_key|apikey|key|secret|auth|sig|signature|credential|security-token)=)[^&;#\s]*",
    re.IGNORECASE,
)


def _userinfo(text: str, start: int) -> tuple[int, str] | None:
    """Where the credentials after a ``scheme://`` at ``start`` end, and what is kept.

    Returns:
        ``(index just past the "@", the masked userinfo)``, or None when there are none.
    """
    space = _SPACE.search(text, start)
    token = text[start : space.start() if space else len(text)]
    authority = _DELIMITER.split(token, maxsplit=1)[0]
    user, colon, after = authority.partition(":")
    last = token.rfind("@")
    if colon and "@" not in user and last >= len(authority) and not _PORT.fullmatch(after):
        # An "@" after a delimiter, and what precedes it is no host:port: a password
        # holding the delimiter unencoded (or a path holding "@", masked all the same).
        return start + last + 1, f"{user}:{MASK}@"
    plain = _PLAIN.match(text, start)
    if plain:
        return plain.end(), f"{plain['user']}:{MASK}@"
    bare = _BARE.match(text, start)
    if bare:
        return bare.end(), f"{MASK}@"
    return None


def mask_credentials(text: str) -> str:
    """Hide the secrets of every URL in ``text`` (see the module's rules).

    ``rtsp://admin:pw@cam/live?token=abc`` becomes ``rtsp://admin:***@cam/live?token=***``.

    Args:
        text: a URL, or any message that may contain URLs.

    Returns:
        The text with secrets replaced by ``***``.
    """
    parts = []
    pos = 0
    for scheme in _SCHEME.finditer(text):
        if scheme.start() < pos:
            continue  # inside credentials already masked
        found = _userinfo(text, scheme.end())
        if found is None:
            continue
        end, kept = found
        parts.append(text[pos : scheme.end()])
        parts.append(kept)
        pos = end
    parts.append(text[pos:])
    return _SECRET_QUERY.sub(rf"\g<key>{MASK}", "".join(parts))


def has_credentials(text: str) -> bool:
    """True when ``text`` holds a secret that :func:`mask_credentials` would mask."""
    return mask_credentials(text) != text
