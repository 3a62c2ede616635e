"""A 2-node RabbitMQ 3.10 cluster with the MQTT plugin, for the cluster tests and benches.

Debian's ``rabbitmq-server`` run as the current user straight from ``/usr/lib/rabbitmq/bin``
(the ``/usr/sbin`` wrappers switch to the ``rabbitmq`` user): two nodes
``edgea@localhost`` and ``edgeb@localhost``, each with its own AMQP, Erlang distribution
and MQTT ports, config file, Mnesia and log dirs under a work dir, sharing an Erlang cookie
(``HOME/.erlang.cookie``) and a private epmd port, so they never meet another RabbitMQ on
the machine. Node B joins A with ``rabbitmqctl join_cluster``. ``node.kill()`` SIGKILLs a
node (a crash); :meth:`RabbitCluster.stop` kills everything.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from edge_agent.tools.ports import HOST, free_port, wait_for_port

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
        if self.a.name not in status or self.b.name not in status:
            raise RuntimeError(f"the nodes did not cluster: {status}")
        return time.monotonic() - began

    def stop(self) -> None:
        """Kill both nodes and the cluster's epmd."""
        for node in (self.a, self.b):
            node.kill()
        self._epmd.kill()
        self._epmd.wait(10)


class ClusterRow(NamedTuple):
    """One fleet size's convergence through the cluster (devices on A, operator on B)."""

    size: int
    startup_s: float
    converge_s: float
    active: int
    not_active: int


CLUSTER_HEADER = "| devices | start s | push (on B) -> all active (on A) s | active | other |"


def format_cluster_row(r: ClusterRow) -> str:
    """A markdown table row."""
    return f"| {r.size} | {r.startup_s:.1f} | {r.converge_s:.1f} | {r.active} | {r.not_active} |"


def run_cluster_size(
    cluster: RabbitCluster, size: int, processes: int, work: Path, timeout: float
) -> ClusterRow:
    """N simulated devices on node A; ``push --group`` from node B; until all ``active``."""
    from edge_agent.publishing.settings import MqttSettings
    from edge_agent.tools.fleet.bench import GROUP, demo_fleet, make_release
    from edge_agent.tools.fleet.fleet import Fleet
    from edge_agent.tools.release.push import ServeSettings, push

    release, public = make_release(work)
    settings = demo_fleet(size, work / "agents", public, cluster.a.host, cluster.a.port,
                          processes=processes)  # fmt: skip
    t0 = time.monotonic()
    fleet = Fleet(settings).start(timeout)
    try:
        startup = time.monotonic() - t0
        active_at: dict[str, float] = {}

        def report(device: str, state: dict) -> None:
            if state.get("state") == "active":
                active_at.setdefault(device, time.monotonic())

        b = MqttSettings(hosts=(f"{cluster.b.host}:{cluster.b.port}",), connect_timeout=10.0)
        t0 = time.monotonic()
        push(release, broker=b, prefix=settings.prefix, group=GROUP,
             serve=ServeSettings(host="127.0.0.1", port=0), timeout=timeout,
             report=report)  # fmt: skip
        done = time.monotonic()
        outcomes = fleet.outcomes()
        active = sum(1 for o in outcomes.values() if o.active and o.version == "2")
        last = max(active_at.values(), default=done)
        return ClusterRow(size, startup, last - t0, active, size - active)
    finally:
        fleet.stop()
