"""A 2-node RabbitMQ cluster with the MQTT plugin, for the cluster tests.

Debian's ``rabbitmq-server`` (3.10) run as the current user straight from
``/usr/lib/rabbitmq/bin`` (the ``/usr/sbin`` wrappers switch to the ``rabbitmq`` user):
two nodes ``edgea@localhost`` and ``edgeb@localhost``, each with its own AMQP, Erlang
distribution and MQTT ports, config file, Mnesia and log dirs under the test's tmp dir,
sharing an Erlang cookie (``HOME/.erlang.cookie``) and a private epmd port, so they never
meet another RabbitMQ on the machine. Node B joins A with ``rabbitmqctl join_cluster``.
``cluster.kill("a")`` SIGKILLs a node (a crash); everything is killed at teardown.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import HOST, free_port, wait_for_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
EPMD = shutil.which("epmd")
MIRROR_ALL = '{"ha-mode": "all", "ha-sync-mode": "automatic"}'
STARTUP_S = 90.0  # one node takes ~10-20 s here; both start at once


def unavailable() -> str:
    """Why the cluster cannot run here ("" when it can)."""
    if not (RABBIT_BIN / "rabbitmq-server").is_file():
        return "rabbitmq-server is not installed (apt-get install rabbitmq-server; make broker)"
    if EPMD is None:
        return "epmd (Erlang) is not on PATH"
    return ""


class RabbitNode:
    """One node's process, ports and files."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]):
        self.name = f"edge{name}@localhost"
        self.host, self.port = HOST, free_port()  # the MQTT listener
        self.workdir = workdir
        workdir.mkdir(parents=True)
        amqp, dist = free_port(), free_port()
        config = workdir / "rabbitmq.conf"
        config.write_text(
            f"listeners.tcp.default = {amqp}\n"
            f"mqtt.listeners.tcp.default = {self.port}\n"
            "mqtt.allow_anonymous = true\n"
            "loopback_users = none\n"
        )
        self.env = {
            **env,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(amqp),
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_PID_FILE": str(workdir / "pid"),
            "RABBITMQ_ENABLED_PLUGINS": "rabbitmq_mqtt",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        }
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Launch the node (its readiness is :meth:`wait_ready`'s)."""
        with open(self.workdir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")],
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as one
            )

    def wait_ready(self, timeout: float) -> None:
        """Until the MQTT listener accepts connections."""
        proc = self._proc
        wait_for_port(self.host, self.port, timeout, lambda: proc.poll() is None)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n NODE args``; raises with its output on failure."""
        done = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def kill(self) -> None:
        """SIGKILL the node's process group: a crash, no goodbye to the cluster."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def logs(self) -> str:
        """The end of the node's logs, for failure messages."""
        files = [self.workdir / "stdout.log", *sorted((self.workdir / "log").glob("*.log"))]
        return "".join(f.read_text(errors="replace")[-3000:] for f in files if f.is_file())

    def __repr__(self) -> str:
        return f"<rabbitmq {self.name} mqtt {self.host}:{self.port}>"


class RabbitCluster:
    """Nodes ``a`` and ``b`` (:class:`RabbitNode`), clustered."""

    def __init__(self, workdir: Path):
        home = workdir / "home"
        home.mkdir(parents=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)  # Erlang refuses a cookie others may read
        self.epmd_port = free_port()
        env = {
            **os.environ,
            "HOME": str(home),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_ALLOW_INPUT": "",
        }
        self._epmd = subprocess.Popen(
            [EPMD, "-port", str(self.epmd_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.a = RabbitNode("a", workdir / "a", env)
        self.b = RabbitNode("b", workdir / "b", env)

    def start(self) -> float:
        """Start both nodes, join B to A; returns the seconds it took."""
        began = time.monotonic()
        for node in (self.a, self.b):
            node.start()
        for node in (self.a, self.b):
            node.wait_ready(STARTUP_S)
        self.b.ctl("stop_app")
        self.b.ctl("join_cluster", self.a.name)
        self.b.ctl("start_app")
        self.b.wait_ready(STARTUP_S)
        # A device's MQTT subscription queue lives on the node it first connected to;
        # when that node dies, the queue's record stays and a reconnect with the same
        # client id on another node is refused ("home node ... is down"). Mirrored on
        # every node, the queue survives: what edge-agent requires of a RabbitMQ cluster.
        self.a.ctl("set_policy", "--apply-to", "queues", "mqtt-subscriptions",
                   "^mqtt-subscription-", MIRROR_ALL)  # fmt: skip
        status = self.b.ctl("cluster_status", "--formatter", "json")
        assert self.a.name in status and self.b.name in status, status
        return time.monotonic() - began

    def stop(self) -> None:
        """Kill both nodes and the cluster's epmd."""
        for node in (self.a, self.b):
            node.kill()
        self._epmd.kill()
        self._epmd.wait(10)


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory) -> Iterator[RabbitCluster]:
    """A started 2-node cluster for one test module (starting one takes ~20-40 s)."""
    why = unavailable()
    if why:
        pytest.skip(why)
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbitmq"))
    try:
        took = cluster.start()
    except Exception as exc:
        logs = cluster.a.logs() + cluster.b.logs()
        cluster.stop()
        # Where RabbitMQ cannot run (no Erlang distribution, a sandbox), say why.
        pytest.skip(f"the RabbitMQ cluster cannot start here: {exc}\n{logs[-1500:]}")
    print(f"rabbitmq cluster up in {took:.1f}s: {cluster.a!r} {cluster.b!r}")
    yield cluster
    cluster.stop()
