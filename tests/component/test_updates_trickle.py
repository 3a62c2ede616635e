"""Downloads against a server that trickles bytes: every limit must still hold.

A socket timeout bounds one ``recv``; a server sending one byte a second beats it
forever. These tests pin the wall-clock limits (per attempt, per file, per update), the
minimum rate, the header deadline and cancel against such a server, for files and for
in-memory fetches (manifests), over plain HTTP and TLS.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from edge_agent.errors import ModelUpdateError
from edge_agent.updates import guard, lookup
from edge_agent.updates.download import Downloader
from edge_agent.updates.transport import DownloadSettings
from tests.support.chaos import figure
from tests.support.updates_http import FileServer, Route, make_tls_files

BODY = os.urandom(4096)
SLACK = 1.0  # the promise: a limit ends the download within limit + 1 s
BASE = dict(
    allow_http=True,
    connect_timeout=2,
    read_timeout=3,
    retries=0,
    backoff_initial=0.01,
    backoff_max=0.05,
    progress_interval=0,
    min_rate_bytes=0,
    attempt_timeout=100,
    max_duration=100,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


def failure(call, *args, **kw):
    """(reason, message, seconds taken) of a call that must fail."""
    start = time.monotonic()
    with pytest.raises(ModelUpdateError) as e:
        call(*args, **kw)
    return e.value.reason, str(e.value), time.monotonic() - start


def download(settings, url, tmp_path, dl=None):
    dl = dl or Downloader(DownloadSettings(**{**BASE, **settings}))
    return dl.download(url, tmp_path / "out.bin", max_bytes=10**6)


def test_body_at_1_byte_per_second_fails_below_the_minimum_rate(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, trickle=1.0))
    settings = dict(min_rate_bytes=100, min_rate_window=3)
    reason, message, took = failure(download, settings, url, tmp_path)
    assert reason == "timeout" and "too slow" in message, message
    assert 3 <= took <= 3 + SLACK, took


def test_body_trickle_ends_at_the_attempt_deadline(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, trickle=1.0))
    reason, message, took = failure(download, dict(attempt_timeout=3), url, tmp_path)
    assert reason == "timeout" and "attempt exceeded 3s" in message, message
    assert 3 <= took <= 3 + SLACK, took


def test_retries_stop_at_the_file_deadline(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, trickle=1.0))
    settings = dict(attempt_timeout=1.5, retries=10, max_duration=4)
    reason, message, took = failure(download, settings, url, tmp_path)
    assert reason == "timeout" and "exceeded 4s" in message, message
    assert took <= 4 + SLACK, took
    assert len(server.requests) >= 2  # it did retry, resuming, until the deadline


def test_update_budget_bounds_every_fetch_inside_it(server, tmp_path):
    manifest = server.add("/manifest.json", Route(body=b"{}", trickle=0.5))
    url = server.add("/m.bin", Route(body=BODY, trickle=1.0))
    dl = Downloader(DownloadSettings(**{**BASE, "retries": 10, "attempt_timeout": 1.5}))
    start = time.monotonic()
    with dl.budget(4):
        assert dl.fetch(manifest, max_bytes=100) == b"{}"  # about 1 s of the budget
        reason, message, _ = failure(download, {}, url, tmp_path, dl)
    took = time.monotonic() - start
    assert reason == "timeout" and "update exceeded its 4s limit" in message, message
    assert took <= 4 + SLACK, took


@pytest.mark.parametrize("fetch", [False, True], ids=["download", "manifest-fetch"])
def test_headers_at_1_byte_per_second_fail_at_the_read_timeout(server, tmp_path, fetch):
    url = server.add("/m.bin", Route(body=BODY, trickle_head=1.0))
    dl = Downloader(DownloadSettings(**{**BASE, "max_duration": 20}))
    if fetch:
        reason, message, took = failure(dl.fetch, url, max_bytes=10**6)
    else:
        reason, message, took = failure(download, {}, url, tmp_path, dl)
    assert reason == "timeout" and "headers within 3s" in message, message
    assert 3 <= took <= 3 + SLACK, took


def test_manifest_fetch_body_trickle_fails_below_the_minimum_rate(server):
    url = server.add("/manifest.json", Route(body=BODY, trickle=1.0))
    dl = Downloader(DownloadSettings(**{**BASE, "min_rate_bytes": 50, "min_rate_window": 2}))
    reason, message, took = failure(dl.fetch, url, max_bytes=10**6)
    assert reason == "timeout" and "too slow" in message, message
    assert took <= 2 + SLACK, took


def _download_in_thread(dl, url, directory):
    """Start ``download`` in a thread; the list gets its failure reason once it ends."""
    outcome: list = []

    def run():
        try:
            download({}, url, directory, dl)
        except ModelUpdateError as exc:
            outcome.append(exc.reason)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("route", ["body", "head"])
def test_cancel_interrupts_a_blocked_transfer_within_1s(server, tmp_path, route):
    trickle = {"body": {"trickle": 1.0}, "head": {"trickle_head": 1.0}}[route]
    url = server.add("/m.bin", Route(body=BODY, **trickle))
    dl = Downloader(DownloadSettings(**{**BASE, "read_timeout": 30, "max_duration": 60}))
    thread, outcome = _download_in_thread(dl, url, tmp_path)
    deadline = time.monotonic() + 10
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.requests, "the download never reached the server"
    time.sleep(1.5)  # let a few bytes trickle: the reader is blocked in recv
    cancelled = time.monotonic()
    dl.cancel.set()
    thread.join(5)
    took = time.monotonic() - cancelled
    assert not thread.is_alive() and outcome == ["cancelled"], outcome
    figure("download_cancel", trickling=route, cancel_return_s=took)
    assert took <= 1.0, took


def test_tls_body_trickle_ends_at_the_attempt_deadline(tmp_path):
    ca, cert, key = make_tls_files(tmp_path)
    with FileServer(tls=(cert, key)) as srv:
        url = srv.add("/m.bin", Route(body=BODY, trickle=1.0))
        settings = dict(allow_http=False, ca_file=ca, attempt_timeout=3)
        reason, message, took = failure(download, settings, url, tmp_path)
    assert reason == "timeout" and "attempt exceeded" in message, message
    assert took <= 3 + SLACK, took


def test_a_slow_but_steady_download_passes_the_minimum_rate(server, tmp_path):
    body = os.urandom(120_000)  # 15 chunks of 8 KiB, one every 0.1 s
    url = server.add("/m.bin", Route(body=body, throttle=0.1))
    settings = dict(min_rate_bytes=8192, min_rate_window=1, attempt_timeout=10)
    size = download(settings, url, tmp_path)
    assert size == len(body) and (tmp_path / "out.bin").read_bytes() == body


def test_a_command_does_not_wait_behind_a_poll_of_a_trickling_manifest(server, tmp_path):
    """The runner polls on the thread that runs commands: a manifest server trickling one
    byte a second (fast enough for the minimum rate) must not hold a rollback back for as
    long as the poll's deadlines allow (up to updates.update_timeout)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent.updates.agent import UpdateRunner
    from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
    from edge_agent.updates.signing import TrustedKeys
    from edge_agent.updates.store import ModelStore
    from tests.support.model_states import States

    manifest = Route(body=b"x" * 2048, trickle=1.0)
    server.add("/manifest.json", manifest)
    states = States()
    settings = UpdateSettings(download=DownloadSettings(**{**BASE, "read_timeout": 30}))
    key = Ed25519PrivateKey.generate().public_key()
    installer = UpdateInstaller(
        ModelStore(tmp_path / "state"), TrustedKeys([key]), settings, progress=states
    )
    runner = UpdateRunner(installer, poll_url=server.url("/manifest.json"), poll_interval=3600)
    runner.start()
    try:
        while manifest.hits == 0:  # the poll is fetching it
            time.sleep(0.01)
        runner.handle("model/rollback", b'{"request_id": "rb"}')
        final = states.final("rb", timeout=5)
        assert (final["state"], final["reason"]) == ("failed", "no_previous"), final
    finally:
        runner.stop(5.0)


@pytest.fixture
def black_hole():
    """A port whose accept queue is full: the kernel drops further SYNs, so a connect to it
    hangs as to a host that went away. Yields the URL of a file on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):  # the first fills the queue; then connects hang
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}/m.bin", port
    for s in [*fillers, listener]:
        s.close()


def syn_sent_to(port: int) -> int:
    """Sockets of this machine still connecting (SYN_SENT) to ``port`` on 127.0.0.1."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if r[2] == f"0100007F:{port:04X}" and r[3] == "02")


def test_cancel_interrupts_a_connect_to_a_host_that_went_away_within_1s(black_hole, tmp_path):
    url, port = black_hole
    before = syn_sent_to(port)  # the fillers beyond the queue hang the same way
    dl = Downloader(DownloadSettings(**{**BASE, "connect_timeout": 30, "max_duration": 60}))
    thread, outcome = _download_in_thread(dl, url, tmp_path)
    deadline = time.monotonic() + 10
    while syn_sent_to(port) <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert syn_sent_to(port) > before, "the download never tried to connect"
    cancelled = time.monotonic()
    dl.cancel.set()  # the daemon stops: its download must end now, not at connect_timeout
    thread.join(5)
    took = time.monotonic() - cancelled
    assert not thread.is_alive() and outcome == ["cancelled"], (outcome, took)
    assert took <= 1.0, took


def test_the_attempt_deadline_holds_while_a_connect_hangs(black_hole, tmp_path):
    url, _ = black_hole
    settings = dict(connect_timeout=30, attempt_timeout=2)
    reason, message, took = failure(download, settings, url, tmp_path)
    assert reason == "timeout" and "attempt exceeded" in message, message
    assert took <= 2 + SLACK, took


@pytest.fixture
def dead_dns(monkeypatch):
    """Name servers that drop every query: a lookup hangs until the test ends. Yields the
    event a lookup sets when it starts."""
    started, release = threading.Event(), threading.Event()

    def getaddrinfo(*args):
        started.set()
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(lookup, "RESOLVER", lookup.Resolver(getaddrinfo=getaddrinfo))
    monkeypatch.setattr(guard, "RESOLVER", lookup.RESOLVER)
    yield started
    release.set()


def test_cancel_interrupts_a_download_whose_name_lookup_hangs_within_1s(dead_dns, tmp_path):
    dl = Downloader(DownloadSettings(**{**BASE, "connect_timeout": 30, "max_duration": 60}))
    thread, outcome = _download_in_thread(dl, "http://updates.example.net/m.bin", tmp_path)
    assert dead_dns.wait(10), "the download never looked the name up"
    cancelled = time.monotonic()
    dl.cancel.set()
    thread.join(5)
    took = time.monotonic() - cancelled
    assert not thread.is_alive() and outcome == ["cancelled"], (outcome, took)
    assert took <= 1.0, took


def test_the_connect_timeout_holds_while_a_name_lookup_hangs(dead_dns, tmp_path):
    settings = dict(connect_timeout=1, attempt_timeout=30)
    url = "http://updates.example.net/m.bin"
    reason, message, took = failure(download, settings, url, tmp_path)
    assert dead_dns.is_set() and reason == "timeout" and "connect" in message, message
    assert took <= 1 + SLACK, took
