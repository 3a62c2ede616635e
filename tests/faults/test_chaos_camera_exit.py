"""Chaos: the daemon stops while its network camera's open is blocked (a host that
accepted the connection and never answers), and that open returns as Python exits.

The camera's stop budget (2 s) is shorter than its backend's timeout (``stale_after``),
so its thread is left in OpenCV when the daemon returns. A thread that comes back from
OpenCV's C++ wrapper while the interpreter finalizes is torn down inside it and the
process aborts: SIGABRT, "terminate called without an active exception", a core dump,
the service failed. The daemon must exit 0 all the same.

The race is made deterministic: the daemon runs under a wrapper whose finalization hook
(an object's ``__del__``, run once Python is finalizing) asks the camera server to hang
up on the held connection, so the blocked open returns exactly then.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

import pytest

from tests.support.broker import wait_until
from tests.support.chaos import DEMO
from tests.support.daemon import DaemonProcess

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

STALE_AFTER_S = 6.0  # far beyond the stop budget and the rest of the shutdown

# The daemon, run by a wrapper: an object in __main__ is deleted only while Python
# finalizes; its __del__ asks the camera server to hang up and waits for the answer
# (the GIL released), so the camera's blocked open returns during finalization.
WRAPPER = """
import socket, sys
from edge_agent.cli import main

class _HangUpWhileFinalizing:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)

    def __del__(self):
        self.sock.sendall(b"h")
        self.sock.recv(1)

hook = _HangUpWhileFinalizing(int(sys.argv[1]))
sys.exit(main(["run", "--config", sys.argv[2]]))
"""


class SilentCamera:
    """Accepts camera connections and holds them, answering nothing; a control
    connection's ``h`` makes it hang up on all of them (then it answers ``k``)."""

    def __init__(self) -> None:
        self.camera = socket.create_server(("127.0.0.1", 0))
        self.control = socket.create_server(("127.0.0.1", 0))
        self.held: list[socket.socket] = []
        self.hung_up = threading.Event()
        self._threads = [
            threading.Thread(target=self._hold, daemon=True),
            threading.Thread(target=self._obey, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.camera.getsockname()[1]}/stream.mjpg"

    @property
    def control_port(self) -> int:
        return self.control.getsockname()[1]

    def _hold(self) -> None:
        while True:
            try:
                conn, _ = self.camera.accept()
            except OSError:
                return  # closed
            self.held.append(conn)

    def _obey(self) -> None:
        while True:
            try:
                conn, _ = self.control.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(60)
                try:
                    if conn.recv(1) != b"h":
                        continue
                    for held in list(self.held):
                        held.close()
                    self.hung_up.set()
                    # Time for the camera thread to come back from OpenCV meanwhile.
                    threading.Event().wait(1.0)
                    conn.sendall(b"k")
                except OSError:
                    pass

    def close(self) -> None:
        self.camera.close()
        self.control.close()
        for held in self.held:
            held.close()
        for thread in self._threads:
            thread.join(5.0)


def test_a_camera_blocked_in_its_open_at_exit_does_not_abort_the_daemon(tmp_path, mqtt_broker):
    camera = SilentCamera()
    daemon = DaemonProcess(
        tmp_path,
        mqtt_broker.port,
        camera.url,
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        camera={"stale_after": STALE_AFTER_S, "reopen_initial": 0.1, "reopen_max": 0.2},
    )
    wrapper = [sys.executable, "-c", WRAPPER, str(camera.control_port), str(daemon.config_path)]
    daemon.start(wrapper)
    try:
        daemon.wait_log(r"mqtt \S+: connected", timeout=30)
        wait_until(lambda: camera.held, 30, "the camera's open reaching the server")
        rc = daemon.stop(signal.SIGTERM, timeout=30)
        log = daemon.log()
    finally:
        daemon.kill_group()
        camera.close()
    assert "terminate called" not in log, log[-2000:]
    assert rc == 0, log[-2000:]


def test_the_doctor_waits_at_exit_for_a_camera_still_in_opencv(monkeypatch):
    """``edge-agent doctor`` gives up on a camera after its timeout; the thread left in
    OpenCV is waited for at exit as the daemon's are, or it could abort the doctor."""
    from types import SimpleNamespace

    from edge_agent.capture import leftover, sources
    from edge_agent.tools.doctor.probes import grab_frame

    answer = threading.Event()

    def opener(spec, **kwargs):
        answer.wait(30)  # an open that outlasts the doctor's wait
        raise OSError("hung up")

    monkeypatch.setattr(sources, "open_capture", opener)
    cam = SimpleNamespace(name="door", source="rtsp://10.0.0.9/live", width=0, height=0, fps=0)
    shape, error, _ = grab_frame(cam, 0.1)
    assert (shape, error) == (None, "no frame within 0.1s")
    left = [t for t in leftover._left if t.name == "doctor-camera-door"]
    assert left and left[0].is_alive()
    answer.set()
    leftover._wait_for_left_threads()  # what atexit runs
    assert not left[0].is_alive()
