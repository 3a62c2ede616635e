"""The lab server ``model push``/``model rollout`` serve releases with (``--serve-cert``).

The whole fleet downloads from it at once: one client that opens a connection and then
says nothing (a device that lost power mid-handshake, a port scanner) must not stall the
downloads of every other device.
"""

from __future__ import annotations

import socket
import threading

import pytest

from edge_agent.tools.release.lab_server import LabServer
from edge_agent.updates.download import Downloader
from edge_agent.updates.transport import DownloadSettings
from tests.support.updates_http import make_tls_files

pytestmark = pytest.mark.timeout(60)


def test_a_silent_client_does_not_stall_the_https_lab_server(tmp_path):
    (tmp_path / "tls").mkdir()
    ca, cert, key = make_tls_files(tmp_path / "tls")
    release = tmp_path / "release"
    release.mkdir()
    (release / "manifest.json").write_bytes(b'{"manifest": {}}')
    (release / "model.tflite").write_bytes(b"TFL3" * 1000)
    server = LabServer(release, ["model.tflite"], host="127.0.0.1", certfile=cert, keyfile=key)
    server.start()
    silent = socket.create_connection(("127.0.0.1", server.port))  # sends no ClientHello
    try:
        settings = DownloadSettings(ca_file=ca, connect_timeout=5, read_timeout=5, retries=0)
        body = Downloader(settings, cancel=threading.Event()).fetch(
            server.url + "model.tflite", max_bytes=10**6
        )
        assert body == b"TFL3" * 1000
    finally:
        silent.close()
        server.stop()
