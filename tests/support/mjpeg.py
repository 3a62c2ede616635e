"""Network cameras for tests: MJPEG over HTTP (``multipart/x-mixed-replace``).

:class:`MjpegHandler` is the protocol (the stream's headers, one JPEG part); each test
writes only how its camera behaves in ``do_GET``. :func:`serving` runs a handler on a
free loopback port for the length of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOUNDARY = b"edgeagentframe"
_PART = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"


class MjpegHandler(BaseHTTPRequestHandler):
    """A camera's HTTP side: quiet, HTTP/1.0, one endless multipart answer per GET."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args: object) -> None:
        pass

    def start_stream(self, **headers: str) -> None:
        """Answer 200 with the multipart content type (and ``headers``)."""
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()

    def send_part(self, data: bytes) -> None:
        """One part of the stream (``data`` need not be a JPEG)."""
        self.wfile.write(_PART % (BOUNDARY, len(data)) + data + b"\r\n")


@contextlib.contextmanager
def serving(handler: type[MjpegHandler], **attrs: Any) -> Iterator[ThreadingHTTPServer]:
    """Serve ``handler`` on 127.0.0.1; the server carries ``attrs``, ``stopping`` (an
    Event the handlers watch) and ``url`` (``http://127.0.0.1:PORT/stream.mjpg``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.stopping = threading.Event()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    for name, value in attrs.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5.0)
