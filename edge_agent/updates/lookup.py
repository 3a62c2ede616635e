"""Name resolution that cancel and every deadline of a download can end.

``socket.getaddrinfo`` cannot be interrupted: with name servers that drop queries it
blocks for the resolver's own timeouts (5 s per try and server by default, minutes with
``options timeout:``/``attempts:`` in resolv.conf), past the download's deadlines and
past a stop of the daemon. :meth:`Resolver.resolve` runs it in a daemon thread of its own
and waits in ticks, calling the caller's ``check`` between them, which raises when the
attempt must end: the caller is free at once, and the lookup left behind finishes on its
own (its answer is dropped). At most :data:`MAX_STUCK` lookups are left behind at once:
while that many still hang, a new one fails at once instead of adding a thread at every
retry for as long as the name servers stay dead. An IP literal asks no name server: it
is resolved at once, even while lookups hang.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from typing import Any

MAX_STUCK = 4  # lookups left behind (still hanging) before new ones fail at once

AddrInfo = tuple[Any, ...]  # one entry of socket.getaddrinfo's answer


class _Lookup:
    """One ``getaddrinfo`` in its own daemon thread."""

    def __init__(self, host: str, port: int, getaddrinfo: Callable[..., list[AddrInfo]]):
        self.done = threading.Event()
        self.host = host
        self._answer: list[AddrInfo] = []
        self._error: OSError | None = None
        self._args = (host, port, 0, socket.SOCK_STREAM)
        self._getaddrinfo = getaddrinfo
        self._thread = threading.Thread(target=self._run, name="name-lookup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._answer = self._getaddrinfo(*self._args)
        except OSError as exc:
            self._error = exc
        except Exception as exc:  # noqa: BLE001 - told to the caller, never lost
            self._error = OSError(f"name lookup of {self.host} failed: {exc}")
        finally:
            self.done.set()

    def answer(self) -> list[AddrInfo]:
        """The addresses (once :attr:`done`)."""
        if self._error is not None:
            raise self._error
        return self._answer


class Resolver:
    """Lookups with a bound on those left hanging; one per process (:data:`RESOLVER`).

    Args:
        max_stuck: lookups left behind at once before new ones fail at once.
        getaddrinfo: ``socket.getaddrinfo`` (injectable for tests).
    """

    def __init__(
        self,
        max_stuck: int = MAX_STUCK,
        getaddrinfo: Callable[..., list[AddrInfo]] = socket.getaddrinfo,
    ):
        self._max_stuck, self._getaddrinfo = max_stuck, getaddrinfo
        self._lock = threading.Lock()  # guards _stuck: downloads resolve from any thread
        self._stuck: list[_Lookup] = []

    def resolve(
        self, host: str, port: int, check: Callable[[], None], tick: float
    ) -> list[AddrInfo]:
        """``socket.getaddrinfo(host, port, 0, SOCK_STREAM)``, calling ``check`` every
        ``tick`` seconds while it runs.

        Raises:
            OSError: the name does not resolve, or :data:`MAX_STUCK` lookups still hang.
            Whatever ``check`` raises (the lookup is then left behind).
        """
        if _ip_literal(host):  # numeric: no name server asked, it cannot hang
            return self._getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        with self._lock:
            self._stuck = [lookup for lookup in self._stuck if not lookup.done.is_set()]
            if len(self._stuck) >= self._max_stuck:
                names = ", ".join(sorted({lookup.host for lookup in self._stuck}))
                raise OSError(
                    f"cannot resolve {host}: {len(self._stuck)} earlier lookups ({names}) "
                    "still hang (name servers unreachable?)"
                )
        lookup = _Lookup(host, port, self._getaddrinfo)
        try:
            while not lookup.done.wait(tick):
                check()
        except BaseException:
            with self._lock:
                self._stuck.append(lookup)
            raise
        return lookup.answer()


def _ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 address (an IPv6 one with its ``%zone``)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


RESOLVER = Resolver()
