"""models/fetch against a real local HTTP server serving copies of the shared models."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.support.paths import REPO, shared_file

FETCH = REPO / "models" / "fetch"
ZOO = REPO / "models" / "zoo.sha256"


def pins() -> dict[str, str]:
    """name -> sha256 from zoo.sha256."""
    return {name: sha for sha, name in (line.split("  ") for line in ZOO.read_text().splitlines())}


class Server(NamedTuple):
    url: str
    root: Path
    requests: list[str]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A loopback HTTP server over tmp_path/srv holding copies of every pinned file."""
    root = tmp_path / "srv"
    root.mkdir()
    for name in pins():
        shutil.copy(shared_file(f"models/{name}"), root / name)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requests.append(self.path)

    handler = functools.partial(Handler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.05,), name="fetch-test-http", daemon=True
    )
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/", root, requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def run(dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FETCH), "--dir", str(dest), "--timeout", "10", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pins_are_the_hashes_of_the_shared_copies() -> None:
    for name, sha in pins().items():
        assert sha256(shared_file(f"models/{name}")) == sha, name


def test_fetches_and_verifies_every_pinned_file(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    out = run(dest, "--base-url", server.url)
    assert (out.returncode, out.stderr) == (0, "")
    assert sorted(p.name for p in dest.iterdir()) == sorted(pins())  # no .part left behind
    for name in pins():
        assert (dest / name).read_bytes() == (server.root / name).read_bytes()
        assert (dest / name).stat().st_mode & 0o777 == 0o644
    assert len(out.stdout.splitlines()) == len(pins())
    assert all(line.startswith("fetched ") for line in out.stdout.splitlines())


def test_verified_files_are_not_downloaded_again(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    assert run(dest, "--base-url", server.url).returncode == 0
    server.requests.clear()
    again = run(dest, "--base-url", server.url)
    assert (again.returncode, server.requests) == (0, [])
    assert again.stdout.splitlines() == [f"present {dest / name}" for name in pins()]


def test_base_url_from_the_environment(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    out = subprocess.run(
        [sys.executable, str(FETCH), "mobilenet_v2_1.0_224_quant.tflite"],
        env={"EDGE_AGENT_MODELS_BASE_URL": server.url, "EDGE_AGENT_MODELS_DIR": str(dest)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert server.requests == ["/mobilenet_v2_1.0_224_quant.tflite"]
    assert [p.name for p in dest.iterdir()] == ["mobilenet_v2_1.0_224_quant.tflite"]


def test_tampered_file_is_rejected_and_nothing_is_left(server: Server, tmp_path: Path) -> None:
    tampered = server.root / "mobilenet_v2_1.0_224_quant.tflite"
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    dest = tmp_path / "models"
    out = run(dest, "--base-url", server.url)
    assert out.returncode == 1
    [error] = out.stderr.splitlines()
    assert error.startswith("fetch: mobilenet_v2_1.0_224_quant.tflite: sha256 mismatch for ")
    assert (
        f"expected {pins()['mobilenet_v2_1.0_224_quant.tflite']}, got {sha256(tampered)}" in error
    )
    # The other files still arrive; the tampered one and its partial file do not.
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        n for n in pins() if n != "mobilenet_v2_1.0_224_quant.tflite"
    )


def test_unreachable_server_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        dest = tmp_path / "models"
        out = run(dest, "--base-url", f"http://127.0.0.1:{closed.getsockname()[1]}/")
    assert out.returncode == 1
    [error] = out.stderr.splitlines()
    assert error.startswith("fetch: cannot reach http://127.0.0.1:")
    assert "Connection refused" in error
    assert list(dest.iterdir()) == []


def test_missing_file_is_an_http_error(server: Server, tmp_path: Path) -> None:
    (server.root / "coco_labels.txt").unlink()
    out = run(tmp_path / "models", "--base-url", server.url, "coco_labels.txt")
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"fetch: coco_labels.txt: {server.url}coco_labels.txt: HTTP 404 File not found"
    ]


def test_size_limit(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    out = run(dest, "--base-url", server.url, "--max-bytes", "4096", "imagenet_labels.txt")
    assert out.returncode == 1
    assert "over --max-bytes 4096" in out.stderr
    assert list(dest.iterdir()) == []


def test_differing_file_is_kept_unless_forced(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "coco_labels.txt").write_text("mine\n")
    kept = run(dest, "--base-url", server.url, "coco_labels.txt")
    assert kept.returncode == 1
    assert "exists with sha256" in kept.stderr and "(--force)" in kept.stderr
    assert (dest / "coco_labels.txt").read_text() == "mine\n"
    assert server.requests == []
    forced = run(dest, "--base-url", server.url, "--force", "coco_labels.txt")
    assert forced.returncode == 0, forced.stderr
    assert sha256(dest / "coco_labels.txt") == pins()["coco_labels.txt"]


def test_extra_manifest_pins_other_files(server: Server, tmp_path: Path) -> None:
    (server.root / "grace_hopper.bmp").write_bytes(
        shared_file("images/grace_hopper.bmp").read_bytes()
    )
    manifest = tmp_path / "site.sha256"
    manifest.write_text(f"{sha256(server.root / 'grace_hopper.bmp')}  grace_hopper.bmp\n")
    dest = tmp_path / "models"
    out = run(dest, "--base-url", server.url, "--manifest", str(manifest))
    assert out.returncode == 0, out.stderr
    assert [p.name for p in dest.iterdir()] == ["grace_hopper.bmp"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not_pinned.tflite"], "fetch: not pinned: not_pinned.tflite (see --list)"),
        (["--manifest", "{bad}"], "fetch: {bad}:1: expected '<sha256>  <file name>'"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.sha256"
    bad.write_text("abc  x.tflite\n")
    out = run(tmp_path / "models", *(a.replace("{bad}", str(bad)) for a in args))
    assert (out.returncode, out.stderr.splitlines()) == (2, [message.replace("{bad}", str(bad))])


def test_list_prints_the_manifest(tmp_path: Path) -> None:
    out = run(tmp_path / "models", "--list")
    assert (out.returncode, out.stdout) == (0, ZOO.read_text())
