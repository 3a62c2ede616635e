"""The downloader against a real loopback HTTP(S) server that misbehaves on purpose."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.download import Downloader
from edge_agent.updates.transport import DownloadSettings
from tests.support.updates_http import FileServer, Route, make_tls_files

BODY = os.urandom(300_000)
FAST = dict(
    allow_http=True,
    connect_timeout=2,
    read_timeout=2,
    retries=2,
    backoff_initial=0.01,
    backoff_max=0.05,
    progress_interval=0,
)


def downloader(**overrides):
    return Downloader(DownloadSettings(**{**FAST, **overrides}))


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


def fetch(dl, url, tmp_path, **kw):
    dest = tmp_path / "out.bin"
    kw.setdefault("max_bytes", 10**7)
    size = dl.download(url, dest, **kw)
    return dest, size


def reason_of(call):
    with pytest.raises(ModelUpdateError) as e:
        call()
    return e.value.reason


def test_download_streams_to_part_then_renames(server, tmp_path):
    url = server.add("/m.bin", BODY)
    seen = []
    dest, size = fetch(downloader(), url, tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert size == len(BODY) and dest.read_bytes() == BODY
    assert not (tmp_path / "out.bin.part").exists()
    assert seen[-1] == (len(BODY), len(BODY))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert server.requests[0][1]["User-Agent"].startswith("edge-agent/")


def test_truncated_transfer_resumes_with_range(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, cut_after=100_000, cut_times=1, etag='"v1"'))
    dest, _ = fetch(downloader(), url, tmp_path, expected_size=len(BODY))
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(BODY).digest()
    assert len(server.requests) == 2
    second = server.requests[1][1]
    assert second["Range"] == "bytes=100000-"
    assert second["If-Range"] == '"v1"'


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, cut_after=50_000, cut_times=1, ignore_range=True))
    dest, _ = fetch(downloader(), url, tmp_path)
    assert dest.read_bytes() == BODY


def test_wrong_content_range_restarts_cleanly(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, cut_after=50_000, cut_times=1, bad_range=True))
    dest, _ = fetch(downloader(retries=3), url, tmp_path)
    assert dest.read_bytes() == BODY
    assert "Range" not in server.requests[-1][1]  # the botched part was discarded


def test_truncated_every_time_fails_truncated(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, cut_after=1000, cut_times=99, ignore_range=True))
    assert reason_of(lambda: fetch(downloader(), url, tmp_path)) == "truncated"
    assert len(server.requests) == 3  # 1 + 2 retries
    assert not (tmp_path / "out.bin").exists()


def test_body_without_length_shorter_than_manifest_is_truncated(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY[:1000], no_length=True))
    dl = downloader(retries=0)
    assert reason_of(lambda: fetch(dl, url, tmp_path, expected_size=2000)) == "truncated"


@pytest.mark.parametrize("status", [404, 403, 410])
def test_client_errors_are_not_retried(server, tmp_path, status):
    url = server.add("/m.bin", Route(body=BODY, status=status))
    assert reason_of(lambda: fetch(downloader(), url, tmp_path)) == "http_error"
    assert len(server.requests) == 1


def test_server_errors_are_retried_then_succeed(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, fail_times=2, fail_status=503))
    dest, _ = fetch(downloader(), url, tmp_path)
    assert dest.read_bytes() == BODY and len(server.requests) == 3


def test_persistent_500_fails(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, fail_times=99))
    with pytest.raises(ModelUpdateError, match="HTTP 500"):
        fetch(downloader(), url, tmp_path)


def test_stalled_server_times_out(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, stall=30))
    start = time.monotonic()
    assert (
        reason_of(lambda: fetch(downloader(read_timeout=0.3, retries=1), url, tmp_path))
        == "timeout"
    )
    assert time.monotonic() - start < 10


def test_content_length_over_cap_is_rejected_before_the_body(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY))
    assert reason_of(lambda: fetch(downloader(), url, tmp_path, max_bytes=1000)) == "too_large"
    assert not (tmp_path / "out.bin.part").exists()
    assert len(server.requests) == 1


def test_stream_over_cap_without_length_is_aborted(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, no_length=True))
    dl = downloader()
    assert reason_of(lambda: fetch(dl, url, tmp_path, max_bytes=100_000)) == "too_large"
    part = tmp_path / "out.bin.part"
    assert not part.exists() or part.stat().st_size <= 100_000


def test_larger_than_manifest_size_is_too_large(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY))
    dl = downloader()
    assert reason_of(lambda: fetch(dl, url, tmp_path, expected_size=len(BODY) - 1)) == "too_large"


def test_host_allowlist_and_scheme(server, tmp_path):
    url = server.add("/m.bin", BODY)
    dl = downloader(allowed_hosts=("models.example.com",))
    assert reason_of(lambda: fetch(dl, url, tmp_path)) == "host_not_allowed"
    assert reason_of(lambda: fetch(downloader(allow_http=False), url, tmp_path)) == "insecure_url"
    assert server.requests == []
    dl = downloader(allowed_hosts=("127.0.0.1",))
    assert fetch(dl, url, tmp_path)[1] == len(BODY)


def test_redirect_hops_are_checked(server, tmp_path):
    server.add("/m.bin", BODY)
    ok = server.add("/r1", Route(redirect="/m.bin"))
    assert fetch(downloader(), ok, tmp_path)[0].read_bytes() == BODY
    away = server.add("/r2", Route(redirect="http://localhost:1/x"))
    dl = downloader(allowed_hosts=("127.0.0.1",))
    assert reason_of(lambda: fetch(dl, away, tmp_path)) == "host_not_allowed"


def test_url_credentials_become_basic_auth_and_stay_out_of_messages(server, tmp_path):
    server.add("/private/m.bin", BODY)
    url = f"http://ops:p%40ss@127.0.0.1:{server.port}/private/m.bin"
    assert fetch(downloader(), url, tmp_path)[0].read_bytes() == BODY
    assert server.requests[-1][1]["Authorization"] == "Basic b3BzOnBAc3M="  # ops:p@ss
    server.add("/private/gone", Route(status=404))
    with pytest.raises(ModelUpdateError) as e:
        fetch(downloader(), url.replace("m.bin", "gone"), tmp_path)
    assert "p%40ss" not in str(e.value) and "***@127.0.0.1" in str(e.value)
    # A redirect to another host does not carry the password along.
    server.add("/private/away", Route(redirect=server.url("/private/m.bin", host="localhost")))
    fetch(downloader(), url.replace("m.bin", "away"), tmp_path)
    assert "Authorization" not in server.requests[-1][1]


def test_connection_refused_is_http_error(tmp_path):
    dl = downloader(retries=1)
    assert reason_of(lambda: fetch(dl, "http://127.0.0.1:9/x", tmp_path)) == "http_error"


def test_cancel_stops_a_download(server, tmp_path):
    url = server.add("/m.bin", Route(body=BODY, throttle=0.05))
    cancel = threading.Event()
    dl = Downloader(DownloadSettings(**FAST), cancel=cancel)
    threading.Timer(0.2, cancel.set).start()
    assert reason_of(lambda: fetch(dl, url, tmp_path)) == "cancelled"


def test_fetch_if_changed(server):
    url = server.add("/manifest.json", Route(body=b'{"a": 1}', etag='"e1"'))
    dl = downloader()
    first = dl.fetch_if_changed(url)
    assert first == (True, b'{"a": 1}', '"e1"', None)
    second = dl.fetch_if_changed(url, first.etag, "Tue, 01 Jan 2030 00:00:00 GMT")
    assert second == (False, None, '"e1"', "Tue, 01 Jan 2030 00:00:00 GMT")
    assert server.requests[1][1]["If-None-Match"] == '"e1"'
    assert server.requests[1][1]["If-Modified-Since"] == "Tue, 01 Jan 2030 00:00:00 GMT"
    server.routes["/manifest.json"].etag = '"e2"'
    assert dl.fetch_if_changed(url, '"e1"').changed is True
    assert reason_of(lambda: dl.fetch(url, max_bytes=3)) == "too_large"


def test_https_with_private_ca(tmp_path):
    ca, cert, key = make_tls_files(tmp_path)
    with FileServer(tls=(cert, key)) as srv:
        url = srv.add("/m.bin", BODY)
        dl = downloader(allow_http=False, ca_file=ca)
        assert fetch(dl, url, tmp_path)[0].read_bytes() == BODY
        # Without the CA the certificate is not trusted: no silent fallback.
        untrusted = downloader(allow_http=False)
        assert reason_of(lambda: fetch(untrusted, url, tmp_path)) == "tls_error"
