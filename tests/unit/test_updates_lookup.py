"""Name lookups that a download's cancel and deadlines can leave behind, and their bound."""

from __future__ import annotations

import socket
import threading

import pytest

from edge_agent.updates.lookup import Resolver


class _Ended(Exception):
    """What the caller's check raises once its attempt must end."""


def _hanging():
    """A getaddrinfo that hangs until released, and the release."""
    release = threading.Event()

    def getaddrinfo(host, port, *args):
        if host.startswith("dead"):
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", port))]

    return getaddrinfo, release


def _end_after(calls: int):
    seen = []

    def check():
        seen.append(1)
        if len(seen) >= calls:
            raise _Ended

    return check


def test_a_hanging_lookup_is_left_behind_when_the_check_raises():
    getaddrinfo, release = _hanging()
    resolver = Resolver(max_stuck=2, getaddrinfo=getaddrinfo)
    try:
        with pytest.raises(_Ended):
            resolver.resolve("dead.example", 443, _end_after(3), 0.01)
        answer = resolver.resolve("live.example", 443, lambda: None, 0.01)
        assert answer[0][4] == ("192.0.2.7", 443)
    finally:
        release.set()


def test_past_max_stuck_hanging_lookups_a_new_one_fails_at_once_until_one_returns():
    getaddrinfo, release = _hanging()
    resolver = Resolver(max_stuck=2, getaddrinfo=getaddrinfo)
    for name in ("dead-a.example", "dead-b.example"):
        with pytest.raises(_Ended):
            resolver.resolve(name, 443, _end_after(1), 0.01)
    with pytest.raises(OSError, match=r"2 earlier lookups \(dead-a.example, dead-b.example\)"):
        resolver.resolve("live.example", 443, lambda: None, 0.01)
    release.set()  # the name servers answer again: the stuck lookups return
    answer = None
    for _ in range(500):  # each resolve drops the lookups that have returned
        try:
            answer = resolver.resolve("live.example", 443, lambda: None, 0.01)
            break
        except OSError:
            threading.Event().wait(0.01)
    assert answer is not None and answer[0][4] == ("192.0.2.7", 443)


def test_a_lookup_error_reaches_the_caller():
    def getaddrinfo(*args):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(socket.gaierror, match="not known"):
        Resolver(getaddrinfo=getaddrinfo).resolve("nope.invalid", 80, lambda: None, 0.01)


@pytest.mark.parametrize("literal", ["192.0.2.9", "2001:db8::9", "fe80::1%lo"])
def test_an_ip_literal_needs_no_name_servers_even_while_lookups_hang(literal):
    """A download from http://192.0.2.9/ (or [2001:db8::9]) asks no name server: dead
    name servers must not fail it."""
    getaddrinfo, release = _hanging()
    resolver = Resolver(max_stuck=1, getaddrinfo=getaddrinfo)
    try:
        with pytest.raises(_Ended):
            resolver.resolve("dead.example", 443, _end_after(1), 0.01)
        answer = resolver.resolve(literal, 443, lambda: None, 0.01)
    finally:
        release.set()
    assert answer[0][4][1] == 443
