"""``edge-agent run``: wires capture, the supervised worker, MQTT and systemd together.

The main thread owns the lifecycle: it starts everything, then drains the signal queue
(filled only by signal handlers) while publishing stats and status, and on SIGHUP reloads
what can change live. The pipeline runs in its own thread. Shutdown stops capture, drains
in-flight frames into MQTT or the spool, publishes ``offline``, joins threads with timeouts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from edge_agent.capture.camera import Camera
from edge_agent.capture.motion import MotionGate
from edge_agent.config import Config
from edge_agent.daemon.controls import DetectSwitch
from edge_agent.daemon.ha_discovery import HaDiscovery, device_topics
from edge_agent.daemon.logcontext import LogContext
from edge_agent.daemon.logcontext import install as install_log_context
from edge_agent.daemon.model_updates import UpdateService
from edge_agent.daemon.objects import ObjectService, start_objects
from edge_agent.daemon.options import device_id, model_options, mqtt_settings
from edge_agent.daemon.pipeline import Pipeline, is_news
from edge_agent.daemon.reload import (
    apply_decoding,
    apply_log_level,
    log_plan,
    plan_reload,
    reread_config,
)
from edge_agent.daemon.sdnotify import Notifier, Watchdog
from edge_agent.daemon.signals import Request, SignalQueue
from edge_agent.daemon.startup import CameraFits, initial_model, start_supervisor
from edge_agent.daemon.statedir import claim_state_dir
from edge_agent.daemon.stats import PipelineStats
from edge_agent.daemon.status import DaemonState, stats_document, status_document
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.inference.devices import apex_temperatures
from edge_agent.inference.supervisor import Supervisor
from edge_agent.inference.switching import EventPayload, SupervisorEvent, WorkerRestarted
from edge_agent.publishing.client import MqttPublisher

logger = logging.getLogger(__name__)


class Daemon:
    """The running service.

    Args:
        config: validated configuration.
        config_path: where it came from (re-read on SIGHUP).
        signals: the signal queue, when the caller installed it early (``edge-agent run``
            does, before reading the config); default a new one installed by :meth:`run`.
    """

    def __init__(self, config: Config, config_path: str = "", signals: SignalQueue | None = None):
        self.config = config
        self.config_path = config_path
        self.device_id = device_id(config)
        self.topics = device_topics(config, self.device_id)  # with HA's birth topic
        self.notifier = Notifier()
        self.watchdog = Watchdog.from_environment(self.notifier)
        self.stats = PipelineStats()
        self.signals = signals or SignalQueue()
        self._stop = threading.Event()  # set by the main thread once a stop is drained
        self.started = time.time()
        self.cameras: list[Camera] = []
        self.camera_state: dict[str, dict[str, Any]] = {}
        self.supervisor: Supervisor | None = None
        self.publisher: MqttPublisher | None = None
        self.updates: UpdateService | None = None
        self.objects: ObjectService | None = None
        self.detect: DetectSwitch | None = None
        self.discovery: HaDiscovery | None = None
        self.last_error = self.store_error = ""
        self._state_lock: int | None = None  # see daemon/statedir.py
        self._state = DaemonState.STARTING
        self._status_lock = threading.Lock()
        self._pipeline_stop = threading.Event()
        self._pipeline: Pipeline | None = None
        self._pipeline_thread: threading.Thread | None = None
        self._status_dirty = threading.Event()
        self._next_stats = 0.0  # monotonic time of the next stats message
        self.log_context = LogContext()
        install_log_context(self.log_context)

    def _on_camera_state(self, name: str, state: str, detail: str) -> None:
        """Camera callback: record and publish the new state."""
        with self._status_lock:
            self.camera_state[name] = {"state": state, "detail": detail}
        shown = f" ({detail})" if detail and detail != state else ""
        logger.info("camera %s: %s%s", name, state, shown)
        self._status_dirty.set()

    def _on_worker_event(self, event: SupervisorEvent, detail: EventPayload) -> None:
        """Supervisor callback: backend changes, worker restarts, model switches."""
        if isinstance(detail, WorkerRestarted):
            self.stats.incr("worker_restarts")
            self.last_error = ""  # older: the supervisor's says why, then whatever failed since
        # The log context names the model; the event itself goes out as one JSON line.
        logger.info("%s %s", event.value, json.dumps(detail._asdict(), default=str))
        self._status_dirty.set()

    def _on_connection(self, connected: bool) -> None:
        """Publisher callback: broker up/down."""
        self._status_dirty.set()

    def _on_command(self, command: str, payload: bytes, topic: str) -> None:
        """Publisher callback: a command arrived (never raises)."""
        try:
            if topic in self.topics.listen:  # Home Assistant's birth, never a model command
                if self.discovery is not None:  # else: start() publishes every config
                    self.discovery.handle(topic, payload)
            elif self.detect is None or not self.detect.handle(command, payload):
                if self.updates is not None:
                    self.updates.handle(command, payload, topic)  # kept until it has started
                else:
                    why = self.store_error or "updates are disabled"  # never just "not yet"
                    logger.warning("command %s on %s ignored: %s", command, topic, why)
        except Exception:
            logger.exception("command %s on %s failed", command, topic)

    def status(self) -> dict[str, Any]:
        """The retained status document."""
        sup = self.supervisor
        with self._status_lock:
            details = {name: s.get("detail", "") for name, s in self.camera_state.items()}
        return status_document(
            state=self._state,
            device_id=self.device_id,
            groups=self.config.device.groups,
            device_type=self.config.device.type,
            started=self.started,
            cameras=[cam.stats() for cam in self.cameras],
            details=details,
            generation=sup.current if sup else None,
            broker_connected=bool(self.publisher and self.publisher.connected),
            broker=self.publisher.broker if self.publisher else "",
            storage_error=(self.publisher.storage_error if self.publisher else "")
            or self.store_error,
            mqtt_error=self.publisher.error if self.publisher else "",
            durability=self.publisher.durability() if self.publisher else None,
            last_error=self.last_error or (sup.last_error if sup else ""),
        )

    def stats_payload(self) -> dict[str, Any]:
        """The periodic stats document."""
        sup = self.supervisor
        return stats_document(
            self.stats.snapshot(resources=True),
            generation=sup.current if sup else None,
            cameras=[cam.stats() for cam in self.cameras],
            worker_restarts=sup.restarts if sup else 0,
            model_dropped=sup.invoke_errors if sup else 0,
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
        self.notifier.status(f"{self._state.value}; backend={status['backend']}; cameras: {cams}")

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool, durable: bool) -> None:
        """Queue one message for the broker (objects' events and counts)."""
        if self.publisher is not None:
            self.publisher.publish(topic, payload, qos, retain, durable=durable)

    def publish_result(self, payload: dict[str, Any]) -> None:
        """Pipeline callback: a frame's results (durable: spooled when offline); a still
        frame's, which repeat earlier ones, wait for the publisher's next batch."""
        if self.publisher is not None:
            self.publisher.publish_result(payload, urgent=is_news(payload))

    def start(self) -> None:
        """Start what takes commands, the publisher, the worker, cameras, pipeline thread.

        Raises:
            EdgeAgentError: the model cannot be loaded on any backend.
        """
        cfg = self.config
        self._state_lock = claim_state_dir(cfg.device.state_dir)  # before anything in it
        if cfg.updates.enabled:
            try:
                self.updates = UpdateService(cfg, model_options(cfg), None, self._report_model)
            except OSError as exc:  # a read-only or broken state dir: detect on, no updates
                self.store_error = f"model store: {exc.strerror}: {exc.filename}; updates off"
                logger.error("%s", self.store_error)
        self.detect = DetectSwitch(
            [c.name for c in cfg.enabled_cameras],
            cfg.device.state_dir,
            self.topics,
            lambda topic, payload: self._publish(topic, payload, 1, True, False),
        )
        if cfg.mqtt.enabled:
            self.publisher = MqttPublisher(
                mqtt_settings(cfg),
                self.topics,
                cfg.spool_dir,
                on_command=self._on_command,
                on_connection_change=self._on_connection,
            )
            self.publisher.start()
        options, meta = initial_model(cfg, self.updates)
        self.supervisor, fallback_error = start_supervisor(
            cfg, options, meta, self._on_worker_event, self.signals
        )
        self.last_error = fallback_error or self.last_error
        fits = CameraFits(self.supervisor, cfg.enabled_cameras, then=self._status_dirty.set)
        for cam_cfg in cfg.enabled_cameras:
            fit = fits.targets.get(cam_cfg.name)  # camera.fit_model: sized to the model
            cam = Camera.from_config(cam_cfg, on_state=self._on_camera_state, fit=fit)
            cam.start()
            self.cameras.append(cam)
        if self.updates is not None:
            self.updates.start(self.supervisor, fallback_error)  # take model commands now
        if self.publisher is not None:  # with events off, it only zeroes a killed run's counts
            threshold = lambda: self.config.model.threshold  # noqa: E731 (a reload sets it)
            self.objects = start_objects(cfg, self.topics, self._publish, threshold)
        self.detect.publish_all()
        self._pipeline = Pipeline(
            self.cameras,
            self.supervisor,
            self.publish_result,
            self.stats,
            self.watchdog.progress,
            results=cfg.mqtt.results_mode,
            on_generation=fits.after_switch,
            on_frame=self.objects.on_frame if self.objects else None,
            on_idle=self.objects.expire if self.objects else None,
            detecting=self.detect.detecting,
            motion=MotionGate.from_config(cfg),
        )
        self._pipeline_thread = threading.Thread(
            target=self._pipeline.run, args=(self._pipeline_stop,), name="pipeline", daemon=True
        )
        self._pipeline_thread.start()
        if self.publisher is not None:  # also to remove what a previous config published
            self.discovery = HaDiscovery(self.publisher, self.topics, cfg, self._status_dirty.set)
            self.discovery.publish(cfg, events=self.objects is not None)

    def _report_model(self, state: dict[str, Any]) -> None:
        """Update-service callback: the retained model state goes to the broker."""
        if self.publisher is not None:
            self.publisher.publish_model(state)

    def _wait_ready(self, timeout: float, broker_grace: float = 10.0) -> None:
        """READY=1 once a frame went through and the broker is up.

        With ``mqtt.ready_without_broker`` a broker still down after ``broker_grace``
        seconds does not hold READY back (results are spooled meanwhile). A camera that
        never delivers does not either, after ``timeout``: the daemon is up and retrying,
        and systemd must not kill it for that.
        """
        start = time.monotonic()
        while not self._stop.is_set():
            waited = time.monotonic() - start
            pipeline = self._pipeline
            # A frame processed, or one taken from a camera whose detection is off.
            frames_ok = not self.cameras or (
                pipeline is not None and pipeline.frames + pipeline.skipped > 0
            )
            broker_ok = self.publisher is None or self.publisher.connected
            if frames_ok and (
                broker_ok or (self.config.mqtt.ready_without_broker and waited > broker_grace)
            ):
                break
            if waited > timeout:
                missing = "frames" if not frames_ok else "the broker"
                logger.warning("ready without %s after %.0fs", missing, waited)
                break
            if self._status_dirty.is_set():
                # A camera that cannot open shows as reconnecting now, not after timeout.
                self._status_dirty.clear()
                self.publish_status()
            self._handle_signals(0.05)
        self._state = DaemonState.RUNNING
        self.notifier.ready()
        self.publish_status()

    def _handle_signals(self, timeout: float) -> None:
        """Drain the signal queue (waiting up to ``timeout``): stop or reload."""
        request = self.signals.wait(timeout)
        if request is Request.STOP:
            self._stop.set()
        elif request is Request.RELOAD:
            self.reload()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        self.signals.install()
        try:
            self.start()
        except EdgeAgentError as exc:
            if self.signals.stop_requested:  # SIGTERM during start-up (a model load)
                logger.info("stopped while starting: %s", exc)
                self.shutdown()
                return 0
            config_error = isinstance(exc, ConfigError)
            if config_error and exc.file is None and self.config_path:
                exc = ConfigError(str(exc), file=self.config_path)  # name file and key
            model = self.config.model.path or "(none configured)"
            about = "" if config_error else f"model {model}: "
            logger.error("%scannot start: %s", about, exc)
            self.last_error = str(exc)
            self._state = DaemonState.FAILED
            self.publish_status()
            self.shutdown(final_state=DaemonState.FAILED)
            return 2 if config_error else 1  # as documented: 2 for configuration errors
        self.publish_status()  # "starting", with each camera's state, before READY
        self._wait_ready(30.0)
        self._next_stats = time.monotonic() + self.config.stats.interval
        problems = ("", "")
        while not self._stop.is_set():
            pub = self.publisher
            if pub is not None and (pub.storage_error, pub.error) != problems:
                problems = (pub.storage_error, pub.error)  # disk full, ACL refusal; or fixed
                self._status_dirty.set()
            if self._status_dirty.is_set():
                self._status_dirty.clear()
                self.publish_status()
            if time.monotonic() >= self._next_stats:
                self._next_stats += self.config.stats.interval
                if self.publisher is not None:
                    self.publisher.publish_stats(self.stats_payload())
                    self._status_dirty.set()  # the status's per-camera counters stay fresh
            self._handle_signals(0.2)  # wakes at once on a stop or reload signal
        self.shutdown()
        return 0

    def reload(self) -> None:
        """SIGHUP: re-read the config and apply what can change live (log level, decoding
        thresholds, stats interval); other changes are logged and wait for a restart."""
        self.notifier.reloading()
        new = reread_config(self.config_path, self.signals)
        if new is None:  # kept the running one (logged why)
            self.notifier.reloaded()
            return
        plan = plan_reload(self.config, new)
        self.config = plan.config
        apply_log_level(plan)
        if self.discovery is not None:  # e.g. expire_after follows stats.interval
            self.discovery.publish(self.config, events=self.objects is not None)
        # A shorter interval: the next stats within it, before Home Assistant expires them.
        self._next_stats = min(self._next_stats, time.monotonic() + self.config.stats.interval)
        if self.supervisor is not None:
            apply_decoding(plan, self.supervisor)
        log_plan(plan, self.config_path)
        self.notifier.reloaded()

    def shutdown(self, final_state: DaemonState = DaemonState.STOPPED) -> None:
        """Stop everything in order, each step bounded in time.

        Args:
            final_state: what the retained status says once stopped (STOPPED, or FAILED
                when the daemon could not start).
        """
        self._state = DaemonState.STOPPING
        self.notifier.stopping()
        if self.updates is not None:  # first: an update in progress ends as interrupted
            self.updates.stop(5.0)  # while the pipeline can still adopt its switch back
        for cam in self.cameras:
            cam.stop_soon()  # all at once: one blocked in its backend delays no other
        deadline = time.monotonic() + 2.0
        for cam in self.cameras:
            cam.stop(max(0.0, deadline - time.monotonic()))
        self._pipeline_stop.set()
        if self._pipeline_thread is not None:
            self._pipeline_thread.join(5.0)
        if self.objects is not None:
            self.objects.close()  # the pipeline has stopped: end the open events
        if self.supervisor is not None:
            self.supervisor.stop(3.0)
        self._state = final_state
        if self.discovery is not None:
            self.discovery.close()
        if self.publisher is not None:
            self.publisher.publish_status(self.status())  # retained: the last word
            self.publisher.stop(5.0)
        self.signals.restore()
        if self._state_lock is not None:
            os.close(self._state_lock)  # last: everything in the state dir is written
        logger.info("stopped")
