"""A fleet of simulated devices on one machine, split over a few shard processes.

``Fleet(settings).start()`` starts ``settings.size`` :class:`~edge_agent.tools.fleet.agent.
SimAgent` s (device ids ``{id_prefix}-000``...), each with its own state dir under
``settings.root``, its own MQTT session and the groups of ``settings.groups``; it returns
once every device's retained status says ``running``. The fleet is then driven from
outside, like real boxes (``model push --group``, a staged rollout runner), and read back
from the broker: :meth:`Fleet.outcomes` and :meth:`Fleet.wait_terminal`.

A deterministic fraction of the devices (``rigged_fraction``, chosen by ``seed``) is
rigged to fail the health check of any release they install: :attr:`Fleet.rigged`
names them, so a test can assert exactly which devices must report ``rolled_back``.

Shards: agents are threads (about four per agent: MQTT, update runner, frame loop, and
a download guard while fetching); ``processes`` spreads them over that many child
processes so one interpreter lock does not serialize 200 devices (0 runs them in the
caller's process, for small tests).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import random
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from edge_agent.errors import EdgeAgentError
from edge_agent.publishing.settings import MqttSettings
from edge_agent.tools.bench.procfs import memory
from edge_agent.tools.fleet.agent import AgentSpec, SimAgent
from edge_agent.tools.fleet.observer import AgentOutcome, FleetObserver

logger = logging.getLogger(__name__)

_STOP = "stop"


@dataclass(frozen=True)
class FleetSettings:
    """A fleet to simulate.

    Attributes:
        size: number of devices.
        root: directory of the agents' state dirs (``root/<device id>``).
        model, labels: the model every device starts on (a release of the same name
            replaces it), and its labels.
        model_name: ``model.name`` (a release must carry it).
        trusted_keys: public keys the devices accept releases from.
        broker_host, broker_port: the devices' broker.
        prefix: topic prefix.
        groups: groups every device announces.
        allowed_hosts, allow_http: where releases may come from.
        rigged_fraction: share of devices rigged to fail the health check (rounded).
        seed: chooses the rigged devices.
        processes: shard processes (0: agents run in this process).
        id_prefix: device ids are ``{id_prefix}-NNN``.
        fps: stub camera rate; health_frames: frames the health check waits for.
        download_timeout, retries: ``[updates]`` download settings.
    """

    size: int
    root: Path
    model: Path
    trusted_keys: tuple[str, ...]
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    labels: Path | None = None
    model_name: str = "fleet-model"
    prefix: str = "fleet"
    groups: tuple[str, ...] = ("fleet",)
    allowed_hosts: tuple[str, ...] = ("127.0.0.1",)
    allow_http: bool = True
    rigged_fraction: float = 0.0
    seed: int = 0
    processes: int = 1
    id_prefix: str = "sim"
    fps: float = 4.0
    health_frames: int = 3
    download_timeout: float = 30.0
    retries: int = 5
    extra_toml: str = field(default="", repr=False)

    def device_ids(self) -> list[str]:
        """The devices' ids, in order."""
        width = max(3, len(str(self.size - 1)))
        return [f"{self.id_prefix}-{i:0{width}d}" for i in range(self.size)]

    def rigged_ids(self) -> frozenset[str]:
        """The devices rigged to fail (``round(size * rigged_fraction)`` of them, by seed)."""
        ids = self.device_ids()
        count = round(len(ids) * self.rigged_fraction)
        return frozenset(random.Random(self.seed).sample(ids, count))

    def config_toml(self) -> str:
        """The config every device shares (``[device]`` is added per agent)."""
        keys = ", ".join(f'"{k}"' for k in self.trusted_keys)
        hosts = ", ".join(f'"{h}"' for h in self.allowed_hosts)
        labels = f'labels = "{self.labels}"\n' if self.labels else ""
        return (
            f'[mqtt]\nhost = "{self.broker_host}"\nport = {self.broker_port}\n'
            f'prefix = "{self.prefix}"\nhomeassistant = false\nspool_max_mb = 1\n'
            f'[model]\npath = "{self.model}"\nname = "{self.model_name}"\n{labels}'
            "num_threads = 1\n"
            f"[updates]\nenabled = true\ntrusted_keys = [{keys}]\n"
            f"allowed_hosts = [{hosts}]\nallow_http = {str(self.allow_http).lower()}\n"
            f"health_frames = {self.health_frames}\n"
            f"download_timeout = {self.download_timeout}\nretries = {self.retries}\n"
            "keep_versions = 2\n"
            "[events]\nenabled = false\n" + self.extra_toml
        )

    def specs(self) -> list[AgentSpec]:
        """Every agent's spec."""
        shared, rigged = self.config_toml(), self.rigged_ids()
        return [
            AgentSpec(d, self.groups, str(self.root / d), shared, d in rigged, self.fps)
            for d in self.device_ids()
        ]


def run_shard(specs: Sequence[AgentSpec], conn: Connection, log_level: int) -> None:
    """A shard process: start its agents, report, run until told to stop (or orphaned)."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s shard: %(message)s")
    agents = start_agents(specs)
    try:
        conn.send(("ready", len(agents)))
        while not conn.poll(1.0):
            pass  # the parent's end closes when it dies: poll then returns True
        try:
            conn.recv()
        except (EOFError, OSError):
            pass
    finally:
        stop_agents(agents)
    try:
        conn.send(("stopped", len(agents)))
    except OSError:
        pass


def start_agents(specs: Sequence[AgentSpec]) -> list[SimAgent]:
    """Start agents one after the other; on a failure stop those started and raise."""
    agents: list[SimAgent] = []
    try:
        for spec in specs:
            agent = SimAgent(spec)
            agents.append(agent)
            agent.start()
    except BaseException:
        stop_agents(agents)
        raise
    return agents


def stop_agents(agents: Sequence[SimAgent]) -> None:
    """Stop agents, several at once (each bounded; one failing stops no other)."""

    def stop(agent: SimAgent) -> None:
        try:
            agent.stop(2.0)
        except Exception:
            logger.exception("agent %s: stop failed", agent.device_id)

    if agents:
        with ThreadPoolExecutor(min(32, len(agents)), thread_name_prefix="fleet-stop") as pool:
            list(pool.map(stop, agents))


class Fleet:
    """Simulated devices on one broker; see the module docstring.

    Args:
        settings: the fleet.
    """

    def __init__(self, settings: FleetSettings):
        if settings.size < 1:
            raise ValueError("a fleet needs at least one device")
        self.settings = settings
        self.device_ids = settings.device_ids()
        self.rigged = settings.rigged_ids()
        self.observer: FleetObserver | None = None
        self._local: list[SimAgent] = []
        self._shards: list[tuple[Any, Connection]] = []

    def start(self, timeout: float = 120.0) -> Fleet:
        """Start every agent and wait until each one's retained status says ``running``.

        Raises:
            EdgeAgentError: a shard failed, or not every device came up in time.
        """
        s = self.settings
        s.root.mkdir(parents=True, exist_ok=True)
        broker = MqttSettings(host=s.broker_host, port=s.broker_port)
        self.observer = FleetObserver(broker, s.prefix)
        specs = s.specs()
        try:
            if s.processes <= 0:
                self._local = start_agents(specs)
            else:
                self._start_shards(specs, timeout)
            want = set(self.device_ids)
            if not self.observer.wait(lambda: want <= self.observer.running(), timeout):
                missing = sorted(want - self.observer.running())
                raise EdgeAgentError(
                    f"fleet: {len(missing)} of {s.size} devices not running after "
                    f"{timeout:.0f}s: {missing[:5]}"
                )
        except BaseException:
            self.stop()
            raise
        logger.info("fleet: %d devices running (%d rigged)", s.size, len(self.rigged))
        return self

    def _start_shards(self, specs: list[AgentSpec], timeout: float) -> None:
        """Spread the agents over the shard processes and wait for each to report."""
        ctx = mp.get_context("spawn")  # no inherited threads or broker sockets
        n = min(self.settings.processes, len(specs))
        level = logging.getLogger().getEffectiveLevel()
        for i in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=run_shard, args=(specs[i::n], child, level), name=f"fleet-shard-{i}"
            )
            proc.daemon = True
            proc.start()
            child.close()
            self._shards.append((proc, parent))
        for proc, conn in self._shards:
            if not conn.poll(timeout):
                raise EdgeAgentError(f"fleet: shard {proc.pid} did not start in {timeout:.0f}s")
            try:
                conn.recv()
            except EOFError as exc:
                raise EdgeAgentError(
                    f"fleet: shard {proc.pid} died while starting (exit {proc.exitcode})"
                ) from exc

    @property
    def shard_pids(self) -> list[int]:
        """The shard processes (empty when the agents run in this process)."""
        return [proc.pid for proc, _ in self._shards]

    def rss_mib(self) -> float | None:
        """Resident memory of the shard processes together, MiB (None: in-process)."""
        mems = [memory(pid) for pid in self.shard_pids]
        return sum(m.rss for m in mems if m) if mems else None

    def outcomes(self, devices: Sequence[str] | None = None) -> dict[str, AgentOutcome]:
        """Each device's latest model state, as it published it."""
        return self.observer.outcomes(self.device_ids if devices is None else devices)

    def wait_terminal(
        self, request_id: str, timeout: float, devices: Sequence[str] | None = None
    ) -> dict[str, AgentOutcome]:
        """Wait until every device (or ``devices``) reported a final state for
        ``request_id``; returns the outcomes then (some not final after the timeout)."""
        chosen = self.device_ids if devices is None else list(devices)

        def done() -> bool:
            got = self.observer.outcomes(chosen).values()
            return all(o.request_id == request_id and o.terminal for o in got)

        self.observer.wait(done, timeout)
        return self.outcomes(chosen)

    def stop(self, timeout: float = 30.0, *, clean: bool = False) -> None:
        """Stop every agent (and the shards); ``clean`` also removes their state dirs."""
        stop_agents(self._local)
        self._local = []
        for _, conn in self._shards:
            try:
                conn.send(_STOP)
            except OSError:
                pass
        for proc, conn in self._shards:
            proc.join(timeout)
            if proc.is_alive():
                logger.error("fleet: shard %s did not stop in %.0fs; killing it", proc.pid, timeout)
                proc.kill()
                proc.join(5.0)
            conn.close()
        self._shards = []
        if self.observer is not None:
            self.observer.close()
            self.observer = None
        if clean:
            shutil.rmtree(self.settings.root, ignore_errors=True)

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
