"""The broker ``edge-agent demo`` starts when none answers: amqtt in-process, else mosquitto.

amqtt needs Python >= 3.10 (the ``[broker]`` extra); Debian bullseye and Raspberry Pi
OS bullseye ship Python 3.9, where a local ``mosquitto`` binary (Debian package
``mosquitto``) serves instead: started on a free loopback port with a config in the
demo's temporary directory, and stopped with it. When neither exists the error says,
in one line, the one command that fixes it.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional, Protocol

from edge_agent.errors import PublishError
from edge_agent.publishing.embedded_broker import EmbeddedBroker

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class DemoBroker(Protocol):
    """What the demo needs of the broker it started."""

    port: int

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop; True when it ended within ``timeout``."""
        ...  # pragma: no cover


class StartedBroker(NamedTuple):
    """The broker the demo started, what it is ("embedded" or "local mosquitto") and the
    ``mqtt.protocol`` its clients should use."""

    broker: DemoBroker
    kind: str
    protocol: str = "auto"


def find_mosquitto() -> Optional[str]:
    """The mosquitto binary: on PATH, else where Debian installs it (/usr/sbin)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def fix_command(version: tuple[int, ...] = tuple(sys.version_info)) -> str:
    """The one command that gives this Python a demo broker."""
    if tuple(version[:2]) >= (3, 10):
        return "pip install 'edge-agent[broker]'"
    # amqtt has no release for 3.9: the system broker is the only way.
    return "sudo apt-get install mosquitto"


def amqtt_works() -> bool:
    """Whether amqtt's broker imports (absent on 3.9; a broken install counts as absent)."""
    try:
        importlib.import_module("amqtt.broker")
    except Exception:  # ImportError, or an install that breaks on import
        return False
    return True


class LocalMosquitto:
    """A mosquitto process on a free loopback port, anonymous, no persistence.

    Args:
        binary: the mosquitto executable.
        workdir: where its config and log go (the demo's temporary directory).
    """

    def __init__(self, binary: str, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.port = 0
        self._proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 10.0) -> None:
        """Start it and return once the port accepts connections.

        Raises:
            PublishError: it exited or did not listen within ``timeout``.
        """
        with socket.socket() as probe:  # a free port; mosquitto binds it right after
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        config = self.workdir / "mosquitto.conf"
        log = self.workdir / "mosquitto.log"
        config.write_text(
            f"listener {self.port} {HOST}\nallow_anonymous true\npersistence false\n"
            f"log_dest file {log}\n"
        )
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.05)  # bounded by the deadline above
                continue
            logger.info("demo mosquitto listening on %s:%d", HOST, self.port)
            return
        self.stop(2.0)
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise PublishError(
            f"{self.binary} did not listen on {HOST}:{self.port}" + (f": {tail[0]}" if tail else "")
        )

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM, wait ``timeout``, then SIGKILL; True when it ended in time."""
        proc = self._proc
        if proc is None:
            return True
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
            return False
        finally:
            self._proc = None
        return True


def start_demo_broker(workdir: Path, *, amqtt: Optional[bool] = None) -> StartedBroker:
    """Start the embedded amqtt broker, else a local mosquitto, on a free loopback port.

    Args:
        workdir: the demo's temporary directory (mosquitto's config and log).
        amqtt: whether amqtt may be used; default: when it is importable.

    Raises:
        PublishError: neither is available (naming the one command that fixes it), or
            the chosen broker did not start.
    """
    if amqtt is None:
        amqtt = amqtt_works()
    if amqtt:
        broker = EmbeddedBroker(HOST, 0)
        broker.start()
        return StartedBroker(broker, "embedded", EmbeddedBroker.PROTOCOL)
    binary = find_mosquitto()
    if binary is None:
        raise PublishError(
            "no MQTT broker: nothing answers on localhost:1883, amqtt is not installed "
            f"and neither is mosquitto; run: {fix_command()}"
        )
    local = LocalMosquitto(binary, workdir)
    local.start()
    return StartedBroker(local, "local mosquitto")
