"""MQTT broker and subscriber fixtures for component and end-to-end tests.

``mqtt_broker`` is a real broker on a free loopback port: ``mosquitto`` when installed
(a generated config in the test's tmp dir), otherwise the embedded amqtt broker of
``edge_agent.publishing.embedded_broker``. Pick the kind per test with
``@pytest.mark.parametrize("mqtt_broker", ["mosquitto", "amqtt"], indirect=True)`` or
for a whole run with ``EDGE_AGENT_TEST_BROKER=amqtt``. ``broker.stop()`` /
``broker.start()`` restart it on the same port (outage tests). ``mqtt_broker_factory``
makes extra brokers (TLS, password file, persistence). ``mqtt_subscriber`` is a real
paho client subscribed to ``#`` that collects messages and waits for them.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.publishing.embedded_broker import EmbeddedBroker
from edge_agent.tools.ports import free_port, wait_for_port  # noqa: F401 (re-exported)
from tests.support.mqtt_client import Message, MqttSubscriber, Refused  # noqa: F401 (re-exported)

# What the daemon logs when a broker leaves its MQTT 5 CONNECT unanswered (amqtt does).
MQTT5_FALLBACK = re.compile(r"cannot connect \(no CONNACK|speaks MQTT 3\.1\.1 only")

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
)
HOST = "127.0.0.1"
# SIGKILL the broker if the test process dies (no orphan brokers after a crashed run);
# setpriv sets it between fork and exec, which is unsafe to do from Python with threads.
_PDEATHSIG = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


class MosquittoBroker:
    """A mosquitto process with a generated config; restartable on the same port.

    Args:
        workdir: where the config, log and persistence files go.
        tls: optional dict with ``cafile``, ``certfile``, ``keyfile`` and optionally
            ``require_certificate`` for a TLS listener.
        password_file: a mosquitto_passwd file; anonymous access is then refused.
        persistent: keep sessions and queued messages across restarts.
    """

    kind = "mosquitto"

    def __init__(self, workdir: Path, *, tls=None, password_file=None, persistent=False):
        self.host, self.port = HOST, free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} {HOST}",
            f"allow_anonymous {'false' if password_file else 'true'}",
            f"persistence {'true' if persistent else 'false'}",
            f"persistence_location {workdir}/",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # root would otherwise drop privileges
            "max_queued_messages 100000",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if password_file:
            lines.append(f"password_file {password_file}")
        if tls:
            lines += [f"cafile {tls['cafile']}", f"certfile {tls['certfile']}"]
            lines += [f"keyfile {tls['keyfile']}"]
            lines.append(
                f"require_certificate {str(tls.get('require_certificate', False)).lower()}"
            )
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until the port accepts connections."""
        assert self._proc is None, "already running"
        with open(self.workdir / "stderr.log", "ab") as stderr:
            self._proc = subprocess.Popen(
                [*_PDEATHSIG, MOSQUITTO, "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        proc = self._proc
        try:
            wait_for_port(self.host, self.port, timeout, lambda: proc.poll() is None)
        except Exception:
            self.kill()
            raise RuntimeError(f"mosquitto did not start:\n{self.logs()}") from None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (clean shutdown, saves persistence), SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def pause(self) -> None:
        """SIGSTOP: the broker hangs with its connections open (a network partition)."""
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: an abrupt broker crash."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()  # also ends a paused (SIGSTOPped) broker
            proc.wait(5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def logs(self) -> str:
        """The broker's log, for failure messages."""
        parts = [p.read_text(errors="replace") for p in (self.log, self.workdir / "stderr.log")]
        return "".join(p for p in parts if p)[-4000:]

    def __repr__(self) -> str:
        return f"<mosquitto {self.host}:{self.port}>"


class AmqttBroker:
    """The embedded amqtt broker, restartable on the same port."""

    kind = "amqtt"

    def __init__(self, workdir: Path | None = None):
        self.host, self.port = HOST, free_port()
        self._broker: EmbeddedBroker | None = None

    def start(self, timeout: float = 10.0) -> None:
        assert self._broker is None, "already running"
        broker = EmbeddedBroker(self.host, self.port)
        broker.start(timeout)
        self._broker = broker

    def stop(self, timeout: float = 5.0) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            assert broker.stop(timeout), "embedded broker thread did not stop"

    kill = stop

    @property
    def running(self) -> bool:
        return self._broker is not None and self._broker.running

    def logs(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"<amqtt {self.host}:{self.port}>"


_KINDS = {"mosquitto": MosquittoBroker, "amqtt": AmqttBroker}


def _default_kind() -> str:
    return os.environ.get("EDGE_AGENT_TEST_BROKER") or ("mosquitto" if MOSQUITTO else "amqtt")


@pytest.fixture
def mqtt_broker_factory(tmp_path_factory) -> Iterator[Callable[..., Any]]:
    """Make started brokers: ``factory(kind=None, **mosquitto_options)``; all stopped after."""
    made: list[Any] = []

    def make(kind: str | None = None, **options: Any):
        kind = kind or _default_kind()
        if kind == "mosquitto" and MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
        if kind == "amqtt" and importlib.util.find_spec("amqtt") is None:
            pytest.skip("amqtt is not installed (pip install 'edge-agent[broker]', Python >= 3.10)")
        workdir = tmp_path_factory.mktemp(kind)
        broker = _KINDS[kind](workdir, **options)
        made.append(broker)
        broker.start()
        return broker

    yield make
    for broker in made:
        broker.kill()


@pytest.fixture
def mqtt_broker(request, mqtt_broker_factory):
    """A running broker on a free loopback port (kind: indirect param, env, or auto)."""
    return mqtt_broker_factory(getattr(request, "param", None))


@pytest.fixture
def mqtt_subscriber(mqtt_broker) -> Iterator[MqttSubscriber]:
    """A started subscriber to ``#`` on ``mqtt_broker``."""
    sub = MqttSubscriber(mqtt_broker.host, mqtt_broker.port).start()
    yield sub
    sub.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 20 ms until it returns something truthy; assert on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.02)


@pytest.fixture
def mqtt_publisher_factory(tmp_path) -> Iterator[Callable[..., Any]]:
    """Make started MqttPublishers: ``factory(port, spool_dir=None, device="dev1",
    groups=(), on_command=None, on_connection_change=None, **settings)``; stopped after.

    Settings default to fast reconnects (0.1..0.5 s) for outage tests.
    """
    from edge_agent.publishing.client import MqttPublisher, MqttSettings
    from edge_agent.publishing.topics import Topics

    made: list[Any] = []

    def make(port, spool_dir=None, device="dev1", groups=(), *, start=True, **options):
        callbacks = {
            k: options.pop(k) for k in ("on_command", "on_connection_change") if k in options
        }
        options = {
            "host": HOST,
            "reconnect_min": 0.1,
            "reconnect_max": 0.5,
            "keepalive": 5,
            **options,
        }
        publisher = MqttPublisher(
            MqttSettings(port=port, **options),
            Topics("edge", device, groups),
            spool_dir or tmp_path / f"spool-{len(made)}",
            **callbacks,
        )
        made.append(publisher)
        if start:
            publisher.start()
        return publisher

    yield make
    for publisher in made:
        publisher.stop(5)
