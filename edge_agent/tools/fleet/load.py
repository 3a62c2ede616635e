"""The bench's broker and its load: a mosquitto for one run, and peak CPU/connections/rates.

CPU and connections come from /proc (the broker's ``stat`` and its socket descriptors);
message rates from the broker's own ``$SYS/broker/messages/{received,sent}`` counters,
published every second (``sys_interval 1``).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.errors import EdgeAgentError
from edge_agent.publishing.settings import MqttSettings, base_client
from edge_agent.tools.bench.procfs import cpu_seconds

logger = logging.getLogger(__name__)

_SYS = "$SYS/broker/messages/"


def find_mosquitto() -> str | None:
    """The mosquitto binary (PATH, then Debian's /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


class BenchBroker:
    """A loopback mosquitto with ``$SYS`` every second and no connection limit.

    Args:
        workdir: config and log go here.
    """

    def __init__(self, workdir: Path):
        binary = find_mosquitto()
        if binary is None:
            raise EdgeAgentError("mosquitto is not installed (apt-get install mosquitto)")
        self.host = "127.0.0.1"
        with socket.socket() as sock:
            sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "mosquitto.log"
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            f"user {pwd.getpwuid(os.getuid()).pw_name}\nsys_interval 1\n"
            "max_connections -1\nmax_queued_messages 100000\n"
            f"log_dest file {self.log}\nlog_type error\nlog_type warning\n"
        )
        self._cmd = [binary, "-c", str(conf)]
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        """The broker's process id."""
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 10.0) -> BenchBroker:
        """Start it and wait until it accepts connections.

        Raises:
            EdgeAgentError: it exited or did not listen in time.
        """
        # The config logs to a file; stderr would only say "do not run as root".
        self._proc = subprocess.Popen(
            self._cmd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EdgeAgentError(f"mosquitto exited with {self._proc.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EdgeAgentError(f"mosquitto not listening on {self.port} after {timeout:.0f}s")

    def stop(self) -> None:
        """Terminate it (killed after 5 s)."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5.0)
        self._proc = None


def socket_count(pid: int) -> int:
    """Open sockets of a process (a broker's: its listeners and client connections)."""
    count = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    count += 1
            except OSError:
                continue  # closed meanwhile
    except OSError:
        return 0
    return count


@dataclass
class Peak:
    """The highest figures seen during a sampling window."""

    broker_cpu: float = 0.0  # percent of one core
    broker_sockets: int = 0
    msgs_in: float = 0.0  # per second, received by the broker
    msgs_out: float = 0.0  # per second, sent by the broker
    operator_cpu: float = 0.0  # this process: push and the lab server (percent of one core)


class LoadSampler:
    """Samples the broker's and this process's load every ``interval`` until stopped.

    Args:
        broker_pid: the broker's process.
        broker: how to read its ``$SYS`` counters.
        interval: seconds between CPU samples.
    """

    def __init__(self, broker_pid: int, broker: MqttSettings, interval: float = 0.5):
        self.peak = Peak()
        self._pid, self._interval = broker_pid, interval
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards peak and _last
        self._last: dict[str, tuple[float, int]] = {}
        self._thread = threading.Thread(target=self._run, name="fleet-load", daemon=True)
        self._client = base_client(broker, f"fleet-load-{uuid.uuid4().hex[:8]}", None)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port, 30)

    def __enter__(self) -> LoadSampler:
        self._client.loop_start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        """Subscribe to the message counters; never raises."""
        try:
            client.subscribe([(_SYS + "received", 0), (_SYS + "sent", 0)])
        except Exception:
            logger.exception("fleet load: subscribe failed")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """A counter: its rate since the previous value; never raises."""
        try:
            key, now, count = msg.topic.rsplit("/", 1)[-1], time.monotonic(), int(msg.payload)
            with self._lock:
                last = self._last.get(key)
                self._last[key] = (now, count)
                if last is None or now - last[0] < 0.5:
                    return
                rate = (count - last[1]) / (now - last[0])
                if key == "received":
                    self.peak.msgs_in = max(self.peak.msgs_in, rate)
                else:
                    self.peak.msgs_out = max(self.peak.msgs_out, rate)
        except Exception:
            logger.debug("fleet load: bad counter on %s", msg.topic, exc_info=True)

    def _run(self) -> None:
        """CPU and sockets every interval."""
        prev_t = time.monotonic()
        prev = (cpu_seconds(self._pid) or 0.0, cpu_seconds() or 0.0)
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            cur = (cpu_seconds(self._pid) or 0.0, cpu_seconds() or 0.0)
            span = max(1e-6, now - prev_t)
            sockets = socket_count(self._pid)
            with self._lock:
                p = self.peak
                p.broker_cpu = max(p.broker_cpu, 100.0 * (cur[0] - prev[0]) / span)
                p.operator_cpu = max(p.operator_cpu, 100.0 * (cur[1] - prev[1]) / span)
                p.broker_sockets = max(p.broker_sockets, sockets)
            prev_t, prev = now, cur
