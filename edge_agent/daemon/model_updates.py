"""The daemon side of model updates: commands in, hot swap with health check, rollback.

The update library (``edge_agent.updates``) verifies and installs releases; this
module gives it what only the running daemon has: a validator that loads the new
model in a separate worker process (fits the configured adapter, allocates, invokes,
matches the golden output), and a swap that switches the pipeline between two frames
and rolls back by itself when the new model is not healthy.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge_agent.config import Config
from edge_agent.errors import EdgeAgentError, ModelUpdateError
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.inference.supervisor import Supervisor
from edge_agent.inference.switching import Switchboard, SwitchTicket
from edge_agent.inference.worker import run_once
from edge_agent.updates.agent import UpdateRunner, current_state
from edge_agent.updates.golden import check_golden, load_golden
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.journal import INTERRUPTED, RequestJournal, final_state
from edge_agent.updates.manifest import Manifest
from edge_agent.updates.release import InstalledRelease
from edge_agent.updates.signing import TrustedKeys
from edge_agent.updates.store import ModelStore
from edge_agent.updates.targets import DeviceIdentity
from edge_agent.updates.transport import DownloadSettings

logger = logging.getLogger(__name__)

SWITCH_TIMEOUT = 15.0


def release_options(base: ModelOptions, root: Path, manifest: Manifest) -> ModelOptions:
    """Model options for a release: its files, its task and adapter settings over the config's.

    Args:
        base: options from the ``[model]`` config (device, threads, defaults).
        root: the release directory.
        manifest: the release manifest.
    """
    model = manifest.file("model")
    cpu = manifest.file("cpu_model")
    labels = manifest.file("labels")
    adapter = dict(manifest.adapter)
    settings = base.settings._replace(
        **{k: adapter[k] for k in DecodeSettings._fields if k in adapter}
    )
    return dataclasses.replace(
        base,
        path=str(root / model.name),
        cpu_model=str(root / cpu.name) if cpu else "",
        labels=str(root / labels.name) if labels else "",
        task=manifest.task or base.task,
        resize=adapter.get("resize", base.resize),
        input_mean=adapter.get("input_mean", base.input_mean),
        input_std=adapter.get("input_std", base.input_std),
        settings=settings,
    )


def update_settings(config: Config) -> UpdateSettings:
    """The ``[updates]`` section as the installer's policy."""
    u = config.updates
    return UpdateSettings(
        download=DownloadSettings(
            allowed_hosts=tuple(u.allowed_hosts),
            allow_http=u.allow_http,
            connect_timeout=min(10.0, u.download_timeout),
            read_timeout=u.download_timeout,
            retries=u.retries,
            attempt_timeout=u.attempt_timeout,
            max_duration=u.update_timeout,
            update_timeout=u.update_timeout,
            min_rate_bytes=u.min_rate_bytes,
            min_rate_window=u.min_rate_window,
        ),
        allow_force=u.force_allowed,
        max_file_bytes=int(u.max_size_mb * 1024 * 1024),
        device=DeviceIdentity(config.device.type, config.device.id, tuple(config.device.groups)),
        model_name=config.model.name,
        allow_model_change=u.allow_model_change,
    )


class UpdateService:
    """Gives the update library the daemon's validator and hot swap, and runs its command runner.

    Args:
        config: the daemon config.
        base_options: the configured model's options.
        supervisor: the running inference supervisor.
        report: publishes a state dict retained on the ``model`` topic (must not block).
    """

    def __init__(
        self, config: Config, base_options: ModelOptions, supervisor: Supervisor | None, report: Any
    ):
        self.config = config
        self.base = base_options
        self.supervisor = supervisor
        self._report = report
        self.store = ModelStore(config.device.state_dir, keep_versions=config.updates.keep_versions)
        self.keys = TrustedKeys.from_paths(config.updates.trusted_keys)
        if not config.updates.trusted_keys:
            logger.warning(
                "updates enabled but updates.trusted_keys is empty: every model "
                "update will be rejected as untrusted"
            )
        self._stop = threading.Event()
        self.installer = UpdateInstaller(
            self.store,
            self.keys,
            update_settings(config),
            validator=self.validate,
            progress=self._progress,
            swap=self.swap,
            cancel=self._stop,
        )
        self._runner: UpdateRunner | None = None
        self.last_state: dict[str, Any] | None = None
        self._journal = RequestJournal(config.device.state_dir)

    # ------------------------------------------------------------------ startup
    def startup_model(self) -> tuple[ModelOptions, dict[str, Any]] | None:
        """The active installed release after crash recovery, or None (use the config's).

        A box killed at any point of an update comes back here on a complete release:
        ``recover()`` sweeps partial downloads and falls back to the newest valid one.
        """
        try:
            release = self.store.recover()
        except (EdgeAgentError, OSError) as exc:
            logger.error(
                "model store %s unusable (%s); using the configured model", self.store.root, exc
            )
            return None
        if release is None:
            return None
        logger.info("model %s: active release from %s", release.label, release.path)
        return release_options(self.base, release.path, release.manifest), _meta(release)

    def start(self, supervisor: Supervisor) -> None:
        """Publish the current state and start taking commands (and polling, if set)."""
        self.supervisor = supervisor
        self._progress(current_state(self.installer))
        self._answer_interrupted()
        u = self.config.updates
        self._runner = UpdateRunner(
            self.installer,
            poll_url=u.manifest_url or None,
            poll_interval=u.poll_interval,
            queue_depth=u.queue_depth,
        ).start()

    def stop(self, timeout: float) -> None:
        """Cancel downloads and stop the command thread (bounded)."""
        self._stop.set()
        if self._runner is not None:
            self._runner.stop(timeout)

    def handle(self, command: str, payload: bytes, topic: str) -> None:
        """MQTT callback: queue a command without blocking (never raises)."""
        if self._runner is None:
            logger.warning("command %s on %s before startup; ignored", command, topic)
            return
        self._runner.handle(command, payload, topic)

    def _progress(self, state: dict[str, Any]) -> None:
        """Installer callback: remember and publish a state.

        The topic is retained, so every state also says which model is serving: a
        rejected command must not hide the model that keeps running.
        """
        gen = self.supervisor.current if self.supervisor is not None else None
        serving = None
        if gen is not None:
            serving = {"name": gen.meta.get("name", ""), "version": gen.meta.get("version", "")}
        state = {**state, "serving": serving}
        stopping = self._stop.is_set()
        if stopping and state.get("state") == "failed" and state.get("reason") == "cancelled":
            # Only shutdown cancels: say so, as the next start will (see _answer_interrupted).
            state = {**state, "reason": INTERRUPTED, "message": "the daemon stopped mid-update"}
        self._journal.observe(state, stopping=stopping)
        self.last_state = state
        self._report(state)

    def _answer_interrupted(self) -> None:
        """Publish the final state of a request the previous run left unfinished."""
        pending = self._journal.take()
        if pending is None:
            return
        try:
            active = self.store.active()
        except ModelUpdateError:
            active = None
        state = final_state(pending, (active.name, active.version) if active else None)
        logger.warning(
            "model update: request %s (%s@%s) was interrupted by the last stop; now %s/%s",
            pending.request_id,
            pending.name,
            pending.version,
            state["state"],
            state["reason"],
        )
        self._progress(state)
        self._journal.clear()

    # ------------------------------------------------- validator and hot swap
    def validate(self, root: Path, manifest: Manifest) -> None:
        """Load the release in a separate worker: adapter fit, allocate, invoke, golden.

        Raises:
            ModelUpdateError: ``incompatible`` (does not fit / cannot run here) or
                ``health_check_failed`` (golden output mismatch).
        """
        options = release_options(self.base, root, manifest)
        try:
            gen = self.supervisor.prepare(
                options, {"name": manifest.name, "version": str(manifest.version)}
            )
        except EdgeAgentError as exc:
            raise ModelUpdateError("incompatible", f"{manifest.label}: {exc}") from exc
        try:
            golden = load_golden(root, manifest)
            if golden is not None:
                outputs = run_once(gen.worker, golden.input, self.config.inference.deadline)
                check_golden(outputs, golden, label=manifest.label)
        except EdgeAgentError as exc:
            if isinstance(exc, ModelUpdateError):
                raise
            raise ModelUpdateError("health_check_failed", f"{manifest.label}: {exc}") from exc
        finally:
            gen.worker.stop(2.0)

    def swap(self, release: InstalledRelease) -> None:
        """Switch the pipeline to a release between two frames, then check its health.

        Healthy means ``updates.health_frames`` frames without an invoke error or a
        worker death. Otherwise the previous model (kept running meanwhile) is switched
        back in and this raises, so the installer reports ``rolled_back``.

        Raises:
            ModelUpdateError: ``swap_failed`` or ``health_check_failed``.
        """
        sup = self.supervisor
        options = release_options(self.base, release.path, release.manifest)
        try:
            model = sup.prepare(options, _meta(release))
        except EdgeAgentError as exc:
            raise ModelUpdateError("swap_failed", f"{release.label}: {exc}") from exc
        if not switched(sup.switches, sup.switches.switch_to(model), SWITCH_TIMEOUT):
            raise ModelUpdateError("swap_failed", f"{release.label}: pipeline did not switch")
        problem = self._health(release)
        if problem is None:
            sup.switches.commit()
            return
        logger.error(
            "model %s: unhealthy after the switch (%s); switching back", release.label, problem
        )
        # A rollback is never cancelled: the store goes back too, so if the pipeline is
        # slow (or stopping), it adopts the rollback when it next runs, and no request
        # outranks it meanwhile.
        ticket = sup.switches.rollback()
        if ticket is None:
            logger.error("model %s: no previous model to switch back to", release.label)
        elif not self._stop.is_set() and not ticket.wait(SWITCH_TIMEOUT):
            logger.warning("model %s: switch back still pending", release.label)
        raise ModelUpdateError("health_check_failed", f"{release.label}: {problem}")

    def _health(self, release: InstalledRelease) -> str | None:
        """Watch the first frames on the new model; a problem description, or None."""
        sup = self.supervisor
        need = self.config.updates.health_frames
        frames0, errors0 = sup.completed, sup.errors
        deadline = time.monotonic() + max(10.0, need * 0.5)
        while time.monotonic() < deadline:
            if self._stop.is_set():
                # Shutting down mid-check proves nothing: the installer rolls the store
                # back, so the box restarts on the model that was known to work.
                return "the daemon stopped before the health check finished"
            if sup.errors > errors0:
                return f"{sup.errors - errors0} failure(s) in its first frames: {sup.last_error}"
            if sup.completed - frames0 >= need:
                return None
            self._stop.wait(0.05)
        if sup.errors > errors0:
            return sup.last_error
        logger.warning(
            "model %s: only %d frames to check health (camera idle?); accepting",
            release.label,
            sup.completed - frames0,
        )
        return None


def switched(switches: Switchboard, ticket: SwitchTicket, timeout: float) -> bool:
    """Wait until the pipeline adopts a switch; after ``timeout`` withdraw it, so a model
    the caller gives up on is never adopted later (it is stopped). True when adopted."""
    if ticket.wait(timeout):
        return ticket.adopted
    return not switches.cancel(ticket)  # False: adopted just before the cancel


def _meta(release: InstalledRelease) -> dict[str, Any]:
    """Name and version shown in results and status."""
    return {"name": release.name, "version": release.version}
