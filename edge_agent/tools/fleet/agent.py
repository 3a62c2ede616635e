"""One simulated device: the daemon's MQTT publisher, update service and supervisor.

A :class:`SimAgent` is wired the way ``edge-agent run`` wires a box (``daemon/app.py``):
its own config, identity (device id, groups) and state dir; the real
:class:`~edge_agent.publishing.client.MqttPublisher` (retained status with its groups,
last will, commands in); the real :class:`~edge_agent.daemon.model_updates.UpdateService`
(command queue, download, signature and hash checks, store, validation, hot swap, health
check, rollback, request ledger and journal); the real supervisor and pipeline. Only the
camera is a stub (a paced synthetic frame) and the model runs in-process
(:mod:`edge_agent.tools.fleet.inline_worker`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.capture.frames import Frame
from edge_agent.capture.health import CameraState, CameraStats
from edge_agent.config import Config
from edge_agent.config.loader import parse_config
from edge_agent.daemon.model_updates import UpdateService
from edge_agent.daemon.options import model_options, mqtt_settings
from edge_agent.daemon.pipeline import Pipeline
from edge_agent.daemon.startup import initial_model
from edge_agent.daemon.stats import PipelineStats
from edge_agent.daemon.status import DaemonState, status_document
from edge_agent.inference.codec import make_codec
from edge_agent.inference.supervisor import Supervisor
from edge_agent.publishing.client import MqttPublisher
from edge_agent.publishing.topics import Topics
from edge_agent.tools.fleet.inline_worker import InlineWorker

logger = logging.getLogger(__name__)

CAMERA = "sim0"


@dataclass(frozen=True)
class AgentSpec:
    """Who one simulated device is and how it behaves (picklable: shards get a list).

    Attributes:
        device_id: ``device.id``.
        groups: ``device.groups``.
        state_dir: ``device.state_dir`` (model store, spool, ledger), one per agent.
        config_toml: the rest of the config, shared by the fleet (``[mqtt]``,
            ``[model]``, ``[updates]``...); ``[device]`` is added per agent.
        rigged: every frame on an installed release fails, so its health check does.
        fps: stub camera frame rate (the health check counts frames).
    """

    device_id: str
    groups: tuple[str, ...]
    state_dir: str
    config_toml: str
    rigged: bool = False
    fps: float = 4.0

    def config(self) -> Config:
        """The agent's validated config (the daemon's own parser).

        Raises:
            ConfigError: the shared config text is invalid.
        """
        groups = ", ".join(f'"{g}"' for g in self.groups)
        device = (
            f'[device]\nid = "{self.device_id}"\ngroups = [{groups}]\n'
            f'state_dir = "{self.state_dir}"\n'
        )
        return parse_config(device + self.config_toml, f"<fleet agent {self.device_id}>", env={})


class StubCamera:
    """A camera that shows one synthetic scene at a steady rate (no capture, no decode)."""

    def __init__(self, name: str = CAMERA, fps: float = 4.0, size: tuple[int, int] = (96, 72)):
        self.name = name
        self._period = 1.0 / max(0.1, fps)
        width, height = size
        ramp = np.linspace(40, 220, width, dtype=np.float32).astype(np.uint8)
        self._image = np.empty((height, width, 3), np.uint8)
        self._image[:] = ramp[None, :, None]
        self._next = time.monotonic()
        self._frame_id = 0
        self._stop = threading.Event()

    def get(self, timeout: float) -> Frame | None:
        """The next frame when it is due within ``timeout``, else None."""
        wait = self._next - time.monotonic()
        # Block like a real camera: a pipeline that asks early must not spin.
        if self._stop.wait(max(0.0, min(wait, timeout))) or wait > timeout:
            return None
        self._next = max(self._next + self._period, time.monotonic())
        self._frame_id += 1
        return Frame(self._image, self._frame_id, time.time(), time.monotonic(), self.name)

    def stats(self) -> CameraStats:
        """Always streaming (the pipeline reads it for the watchdog, see daemon.liveness)."""
        fps = 1.0 / self._period
        return CameraStats(self.name, "stub", CameraState.STREAMING, self._frame_id, 0, 0, fps,
                           None, 0.0, 0.0)  # fmt: skip

    def stop(self) -> None:
        """Wake a waiting ``get`` (it returns None from now on)."""
        self._stop.set()


def _drop(result: dict[str, Any]) -> None:
    """Results sink of the simulated pipeline (``results = "off"`` never calls it)."""


class SimAgent:
    """One simulated device, started and stopped by its owner (a fleet shard).

    Args:
        spec: identity, state dir, config and rig.
    """

    def __init__(self, spec: AgentSpec):
        self.spec = spec
        self.config = spec.config()
        self.device_id = spec.device_id
        self.topics = Topics(self.config.mqtt.prefix, self.device_id, self.config.device.groups)
        self.camera = StubCamera(fps=spec.fps)
        self.stats = PipelineStats()
        self.publisher: MqttPublisher | None = None
        self.updates: UpdateService | None = None
        self.supervisor: Supervisor | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store_root = Path(self.config.device.state_dir).resolve()
        self.started = time.time()

    def _worker(self, request: Any, **kw: Any) -> InlineWorker:
        """Worker factory: a rigged agent fails frames on installed releases only (its
        configured model keeps working, as the one known to work on the box does)."""
        release = Path(request.model_path).resolve().is_relative_to(self._store_root)
        return InlineWorker(request, fail_invokes=self.spec.rigged and release, **kw)

    def start(self) -> None:
        """Connect, load the model, publish the status and take update commands.

        Raises:
            EdgeAgentError: the model cannot be loaded; ConfigError: bad settings.
        """
        cfg = self.config
        Path(cfg.device.state_dir).mkdir(parents=True, exist_ok=True)
        self.publisher = MqttPublisher(
            mqtt_settings(cfg), self.topics, cfg.spool_dir, on_command=self._on_command
        )
        self.publisher.start()
        self.updates = UpdateService(cfg, model_options(cfg), None, self.publisher.publish_model)
        options, meta = initial_model(cfg, self.updates)
        inf = cfg.inference
        self.supervisor = Supervisor(
            options,
            make_codec,
            deadline=inf.deadline,
            load_timeout=inf.load_timeout,
            meta=meta,
            worker_factory=self._worker,
            on_event=lambda event, payload: self._publish_status(),
        )
        self.supervisor.start()
        self.updates.start(self.supervisor)
        # No results are published: the simulator measures the update path only.
        pipeline = Pipeline([self.camera], self.supervisor, _drop, self.stats, results="off")
        self._thread = threading.Thread(
            target=pipeline.run, args=(self._stop,), name=f"sim-{self.device_id}", daemon=True
        )
        self._thread.start()
        self._publish_status()

    def _on_command(self, command: str, payload: bytes, topic: str) -> None:
        """Publisher callback, as the daemon's: model commands to the update service."""
        try:
            if self.updates is not None:
                self.updates.handle(command, payload, topic)
        except Exception:  # an MQTT callback never raises
            logger.exception("agent %s: command %s failed", self.device_id, command)

    def _publish_status(self, state: DaemonState = DaemonState.RUNNING) -> None:
        """The retained status (``groups`` is how ``push --group`` finds the device)."""
        if self.publisher is None:
            return
        sup = self.supervisor
        self.publisher.publish_status(
            status_document(
                state=state,
                device_id=self.device_id,
                groups=self.config.device.groups,
                started=self.started,
                cameras=[],
                details={},
                generation=sup.current if sup else None,
                broker_connected=self.publisher.connected,
                last_error=sup.last_error if sup else "",
            )
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop updates, the frame loop, the model and the publisher (each bounded)."""
        self._stop.set()
        self.camera.stop()
        if self.updates is not None:
            self.updates.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("agent %s: frame loop did not stop in %.0fs", self.device_id, timeout)
        if self.supervisor is not None:
            self.supervisor.stop(1.0)
        if self.publisher is not None:
            self._publish_status(DaemonState.STOPPED)
            self.publisher.stop(timeout)
