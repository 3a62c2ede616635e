"""``edge-agent run``: wires capture, the supervised worker, MQTT and systemd together.

The main thread owns the lifecycle: it starts everything, then waits on the stop flag
(set only by signal handlers) while publishing stats and status, and on SIGHUP reloads
the configuration. The pipeline runs in its own thread. Shutdown stops capture, drains
in-flight frames into MQTT or the spool, publishes ``offline``, and joins every thread
with a timeout.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from edge_agent.capture.camera import Camera
from edge_agent.config import Config, load_config
from edge_agent.daemon.logcontext import LogContext
from edge_agent.daemon.logcontext import install as install_log_context
from edge_agent.daemon.model_updates import UpdateService
from edge_agent.daemon.pipeline import Pipeline
from edge_agent.daemon.sdnotify import Notifier, Watchdog
from edge_agent.daemon.signals import SignalFlags
from edge_agent.daemon.stats import PipelineStats
from edge_agent.daemon.status import stats_document, status_document
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.inference.codec import make_codec
from edge_agent.inference.devices import apex_temperatures
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.inference.supervisor import Supervisor
from edge_agent.publishing.client import MqttPublisher, MqttSettings
from edge_agent.publishing.discovery import discovery_messages
from edge_agent.publishing.topics import Topics

logger = logging.getLogger(__name__)


def model_options(config: Config) -> ModelOptions:
    """The ``[model]`` and ``[inference]`` sections as ModelOptions."""
    m = config.model
    return ModelOptions(
        path=m.path,
        cpu_model=m.cpu_model,
        labels=m.labels,
        device=m.device,
        num_threads=m.num_threads,
        task=m.task,
        resize=m.resize,
        input_mean=m.input_mean,
        input_std=m.input_std,
        settings=DecodeSettings(m.threshold, m.top_k, m.iou, m.max_detections),
        labels_filter=m.labels_filter,
        warmup=config.inference.warmup,
    )


def mqtt_settings(config: Config) -> MqttSettings:
    """The ``[mqtt]`` section as the publisher's settings."""
    q = config.mqtt
    return MqttSettings(
        host=q.host,
        port=q.port,
        transport=q.transport,
        client_id=q.client_id,
        username=q.username or None,
        password=q.password or None,
        keepalive=q.keepalive,
        tls=q.tls,
        ca_file=q.ca_file or None,
        cert_file=q.cert_file or None,
        key_file=q.key_file or None,
        tls_insecure=q.tls_insecure,
        reconnect_min=q.reconnect_min,
        reconnect_max=q.reconnect_max,
        spool_max_bytes=int(q.spool_max_mb * 1024 * 1024),
        qos_results=q.qos_results,
        qos_stats=q.qos_stats,
        retain_status=q.retain_status,
    )


class Daemon:
    """The running service.

    Args:
        config: validated configuration.
        config_path: where it came from (re-read on SIGHUP).
    """

    def __init__(self, config: Config, config_path: str = ""):
        self.config = config
        self.config_path = config_path
        self.device_id = config.device.id or socket.gethostname().split(".")[0]
        self.topics = Topics(config.mqtt.prefix, self.device_id, config.device.groups)
        self.notifier = Notifier()
        self.watchdog = Watchdog.from_environment(self.notifier)
        self.stats = PipelineStats()
        self.flags = SignalFlags()
        self.started = time.time()
        self.cameras: list[Camera] = []
        self.camera_state: dict[str, dict[str, Any]] = {}
        self.supervisor: Supervisor | None = None
        self.publisher: MqttPublisher | None = None
        self.updates: Any = None
        self.last_error = ""
        self._state = "starting"
        self._status_lock = threading.Lock()
        self._pipeline_stop = threading.Event()
        self._pipeline_thread: threading.Thread | None = None
        self._status_dirty = threading.Event()
        self.log_context = LogContext()
        install_log_context(self.log_context)

    # ------------------------------------------------------------------ events
    def _on_camera_state(self, name: str, state: str, detail: str) -> None:
        """Camera callback: record and publish the new state."""
        with self._status_lock:
            self.camera_state[name] = {"state": state, "detail": detail}
        if detail and detail != state:
            logger.info("camera %s: %s (%s)", name, state, detail)
        else:
            logger.info("camera %s: %s", name, state)
        self._status_dirty.set()

    def _on_worker_event(self, kind: str, detail: dict[str, Any]) -> None:
        """Supervisor callback: backend changes, worker restarts, model switches."""
        if kind == "worker_restart":
            self.stats.incr("worker_restarts")
            self.last_error = detail.get("reason", "")
        # The log context names the model; the event itself goes out as one JSON line.
        logger.info("%s %s", kind, json.dumps(detail, default=str))
        self._status_dirty.set()

    def _on_connection(self, connected: bool) -> None:
        """Publisher callback: broker up/down."""
        self._status_dirty.set()

    def _on_command(self, command: str, payload: bytes, topic: str) -> None:
        """Publisher callback: a command arrived (never raises)."""
        try:
            if self.updates is not None:
                self.updates.handle(command, payload, topic)
            else:
                logger.warning("command %s on %s ignored: updates are disabled", command, topic)
        except Exception:
            logger.exception("command %s on %s failed", command, topic)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """The retained status document."""
        sup = self.supervisor
        with self._status_lock:
            details = {name: s.get("detail", "") for name, s in self.camera_state.items()}
        return status_document(
            state=self._state,
            device_id=self.device_id,
            groups=self.config.device.groups,
            started=self.started,
            cameras=[cam.stats() for cam in self.cameras],
            details=details,
            generation=sup.generation if sup else None,
            broker_connected=bool(self.publisher and self.publisher.connected),
            storage_error=self.publisher.storage_error if self.publisher else "",
            last_error=self.last_error or (sup.last_error if sup else ""),
        )

    def stats_payload(self) -> dict[str, Any]:
        """The periodic stats document."""
        sup = self.supervisor
        return stats_document(
            self.stats.snapshot(resources=True),
            generation=sup.generation if sup else None,
            cameras=[cam.stats() for cam in self.cameras],
            worker_restarts=sup.restarts if sup else 0,
            mqtt=self.publisher.stats() if self.publisher else {},
            apex_temperatures=apex_temperatures(),
        )

    def publish_status(self) -> None:
        """Publish the retained status (and tell systemd in one line)."""
        status = self.status()
        model = status["model"]
        self.log_context.set(
            model=f"{model['name']}@{model['version']}" if model["version"] else model["name"],
            backend=status["backend"],
            cameras=list(status["cameras"]),
        )
        if self.publisher is not None:
            self.publisher.publish_status(status)
        cams = ", ".join(f"{n}={s.get('state')}" for n, s in status["cameras"].items())
        self.notifier.status(f"{self._state}; backend={status['backend']}; cameras: {cams}")

    def publish_result(self, payload: dict[str, Any]) -> None:
        """Pipeline callback: a frame's results (durable: spooled when offline)."""
        if self.publisher is not None:
            self.publisher.publish_result(payload)

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the publisher, the worker, the cameras and the pipeline thread.

        Raises:
            EdgeAgentError: the model cannot be loaded on any backend.
        """
        cfg = self.config
        os.makedirs(cfg.device.state_dir, exist_ok=True)
        if cfg.mqtt.enabled:
            self.publisher = MqttPublisher(
                mqtt_settings(cfg),
                self.topics,
                cfg.spool_dir,
                on_command=self._on_command,
                on_connection_change=self._on_connection,
            )
            self.publisher.start()
        options, meta = self._initial_model()
        self.supervisor = self._start_supervisor(options, meta)
        for cam_cfg in cfg.enabled_cameras:
            cam = Camera.from_config(cam_cfg, on_state=self._on_camera_state)
            cam.start()
            self.cameras.append(cam)
        self._start_updates()
        pipeline = Pipeline(
            self.cameras,
            self.supervisor,
            self.publish_result,
            self.stats,
            self.watchdog.progress,
            every_frame=cfg.mqtt.publish_every_frame,
            on_generation=self._status_dirty.set,
        )
        self._pipeline = pipeline
        self._pipeline_thread = threading.Thread(
            target=pipeline.run, args=(self._pipeline_stop,), name="pipeline", daemon=True
        )
        self._pipeline_thread.start()
        if self.publisher is not None and cfg.mqtt.homeassistant:
            for topic, payload in discovery_messages(
                self.topics,
                discovery_prefix=cfg.mqtt.discovery_prefix,
                stats_interval=cfg.stats.interval,
            ):
                self.publisher.publish(topic, payload, qos=1, retain=True)

    def _initial_model(self) -> tuple[ModelOptions, dict[str, Any]]:
        """The active installed release when updates are on, else the configured model."""
        cfg = self.config
        m = cfg.model
        options = model_options(cfg)
        meta = {
            "name": m.name or os.path.splitext(os.path.basename(m.path))[0],
            "version": m.version,
        }
        if cfg.updates.enabled:
            report = self.publisher.publish_model if self.publisher else (lambda state: None)
            self.updates = UpdateService(cfg, options, None, report)
            active = self.updates.startup_model()
            if active is not None:
                return active
        if not m.path:
            raise ConfigError(
                f"no model configured and no release installed in {cfg.device.state_dir}/models",
                file=cfg.source or None,
                key="model.path",
            )
        return options, meta

    def _start_supervisor(self, options: ModelOptions, meta: dict[str, Any]) -> Supervisor:
        """Start the worker on the chosen model; an installed release that will not start
        falls back to the configured model rather than leaving the box without one."""
        inf = self.config.inference

        def make(opts: ModelOptions, info: dict[str, Any]) -> Supervisor:
            sup = Supervisor(
                opts,
                make_codec,
                deadline=inf.deadline,
                reprobe_initial=inf.reprobe_initial,
                reprobe_max=inf.reprobe_max,
                on_event=self._on_worker_event,
                meta=info,
            )
            sup.start()
            return sup

        try:
            return make(options, meta)
        except EdgeAgentError as exc:
            configured = model_options(self.config)
            if options == configured or not self.config.model.path:
                raise
            logger.error(
                "model %s: installed release will not start (%s); using %s",
                meta.get("name"),
                exc,
                configured.path,
            )
            self.last_error = str(exc)
            return make(configured, {"name": os.path.basename(configured.path), "version": ""})

    def _start_updates(self) -> None:
        """Start taking model commands once the pipeline runs."""
        if self.updates is not None:
            self.updates.start(self.supervisor)

    def _wait_ready(self, timeout: float, broker_grace: float = 10.0) -> None:
        """READY=1 once a frame went through and the broker is up.

        With ``mqtt.ready_without_broker`` a broker still down after ``broker_grace``
        seconds does not hold READY back (results are spooled meanwhile). A camera that
        never delivers does not either, after ``timeout``: the daemon is up and retrying,
        and systemd must not kill it for that.
        """
        start = time.monotonic()
        while not self.flags.stop_event.is_set():
            waited = time.monotonic() - start
            frames_ok = self._pipeline.frames > 0 or not self.cameras
            broker_ok = self.publisher is None or self.publisher.connected
            if frames_ok and (
                broker_ok or (self.config.mqtt.ready_without_broker and waited > broker_grace)
            ):
                break
            if waited > timeout:
                logger.warning(
                    "ready without %s after %.0fs",
                    "frames" if not frames_ok else "the broker",
                    waited,
                )
                break
            self.flags.stop_event.wait(0.05)
        self._state = "running"
        self.notifier.ready()
        self.publish_status()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        self.flags.install()
        try:
            self.start()
        except EdgeAgentError as exc:
            model = self.config.model.path or "(none configured)"
            logger.error("model %s: cannot start: %s", model, exc)
            self.last_error = str(exc)
            self._state = "failed"
            self.publish_status()
            self.shutdown(final_state="failed")
            return 1
        self._wait_ready(30.0)
        next_stats = time.monotonic() + self.config.stats.interval
        storage_error = ""
        while not self.flags.stop_event.is_set():
            if self.flags.reload_requested():
                self.reload()
            if self.publisher is not None and self.publisher.storage_error != storage_error:
                storage_error = self.publisher.storage_error  # disk full, or recovered
                self._status_dirty.set()
            if self._status_dirty.is_set():
                self._status_dirty.clear()
                self.publish_status()
            if time.monotonic() >= next_stats:
                next_stats += self.config.stats.interval
                if self.publisher is not None:
                    self.publisher.publish_stats(self.stats_payload())
                    # The retained status carries per-camera counters: keep them fresh.
                    self._status_dirty.set()
            self.flags.wait(0.2)  # wakes at once on a stop or reload signal
        self.shutdown()
        return 0

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply what can change live (log level, thresholds)."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except EdgeAgentError as exc:
            logger.error("reload: keeping the running configuration: %s", exc)
            self.notifier.ready()
            return
        logging.getLogger().setLevel(new.logging.level)
        if self.supervisor is not None:
            m = new.model
            # Applied by the pipeline thread between frames, and kept for every worker
            # that replaces the current one (restart, fallback, re-probe, model switch).
            self.supervisor.set_decoding(
                DecodeSettings(m.threshold, m.top_k, m.iou, m.max_detections), m.labels_filter
            )
        logger.info(
            "reload: applied %s (thresholds, log level); restart for other changes",
            self.config_path,
        )
        self.config = new
        self.notifier.ready()

    def shutdown(self, final_state: str = "stopped") -> None:
        """Stop everything in order, each step bounded in time.

        Args:
            final_state: what the retained status says once stopped ("stopped", or
                "failed" when the daemon could not start).
        """
        self._state = "stopping"
        self.notifier.stopping()
        for cam in self.cameras:
            cam.stop(2.0)
        self._pipeline_stop.set()
        if self._pipeline_thread is not None:
            self._pipeline_thread.join(5.0)
        if self.updates is not None:
            self.updates.stop(5.0)
        if self.supervisor is not None:
            self.supervisor.stop(3.0)
        self._state = final_state
        if self.publisher is not None:
            self.publisher.publish_status(self.status())  # retained: the last word
            self.publisher.stop(5.0)
        self.flags.restore()
        logger.info("stopped")
