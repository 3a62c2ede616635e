"""Broker addresses (``mqtt.hosts``): parsing ``host:port`` and the failover order.

A device or operator given several brokers (e.g. the nodes of a cluster, or a primary and
a standby) keeps one :class:`HostRotation`: it connects to the current broker, and after
a lost connection or a failed attempt moves on to the next one in the list, wrapping
around. Pure: no I/O, no logging.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_HOST = re.compile(r"[A-Za-z0-9._-]+")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?")


class Endpoint(NamedTuple):
    """One broker: host name or address, and TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_endpoint(text: str, default_port: int = 1883) -> Endpoint:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as an :class:`Endpoint`.

    Raises:
        ValueError: with a message that says what was expected.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected HOST[:PORT], got an empty value")
    text = text.strip()
    if "://" in text or "/" in text:
        raise ValueError(f"expected HOST[:PORT], not a URL or path: {text!r}")
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or not _IPV6.fullmatch(host) or (rest and not rest.startswith(":")):
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        port = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError(f"write an IPv6 address in brackets, as [{text}]:PORT")
    else:
        host, colon, port = text.partition(":")
        port = port if colon else None
        if not _HOST.fullmatch(host):
            raise ValueError(f"expected HOST[:PORT], got {text!r}")
    if port is None:
        return Endpoint(host, default_port)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected a port 1..65535 in {text!r}")
    return Endpoint(host, int(port))


def parse_endpoints(
    texts: tuple[str, ...] | list[str], default_port: int = 1883
) -> tuple[Endpoint, ...]:
    """Every entry of a list, in order; duplicates refused (they would only add delay).

    Raises:
        ValueError: ``"[i]: why"`` for the first bad entry.
    """
    out: list[Endpoint] = []
    for index, text in enumerate(texts):
        try:
            endpoint = parse_endpoint(text, default_port)
        except ValueError as exc:
            raise ValueError(f"[{index}]: {exc}") from None
        if endpoint in out:
            raise ValueError(f"[{index}]: {endpoint} is listed twice")
        out.append(endpoint)
    return tuple(out)


class HostRotation:
    """The broker to try now, in list order, and whether a full cycle failed.

    One cycle starts at the broker after the one that was lost (or at the first at
    start) and ends when every broker failed once: only then does the caller back off,
    so a dead broker costs one attempt, not a backoff delay. Owned by one thread.

    Args:
        endpoints: the brokers in order of preference (at least one).

    Raises:
        ValueError: an empty list.
    """

    def __init__(self, endpoints: tuple[Endpoint, ...] | list[Endpoint]):
        if not endpoints:
            raise ValueError("at least one broker is needed")
        self.endpoints = tuple(endpoints)
        self._index = 0
        self._cycle_start = 0

    @property
    def current(self) -> Endpoint:
        """The broker of the next (or the live) connection."""
        return self.endpoints[self._index]

    def failed(self) -> bool:
        """An attempt on :attr:`current` failed: move on; True when the cycle is complete
        (every broker failed since the last connection or loss)."""
        self._index = (self._index + 1) % len(self.endpoints)
        return self._index == self._cycle_start

    def lost(self) -> None:
        """An established connection was lost: a new cycle starts at the next broker."""
        self._index = (self._index + 1) % len(self.endpoints)
        self._cycle_start = self._index

    def connected(self) -> None:
        """A CONNACK from :attr:`current`: it starts the cycle after its loss."""
        self._cycle_start = self._index
