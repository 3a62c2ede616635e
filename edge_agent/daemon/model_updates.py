"""The daemon side of model updates: commands in, hot swap with health check, rollback.

The update library (``edge_agent.updates``) verifies and installs releases; this
module gives it what only the running daemon has: a validator that loads the new
model in a separate worker process (fits the configured adapter, allocates, invokes,
matches the golden output), and a swap that switches the pipeline between two frames
and rolls back by itself when the new model is not healthy.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge_agent.config import Config
from edge_agent.daemon.preflight import trusted_keys
from edge_agent.daemon.trial import Counters, HealthWatch, Outcome, Verdict
from edge_agent.daemon.update_inbox import CommandInbox, Held
from edge_agent.daemon.update_options import release_options, update_settings
from edge_agent.daemon.update_states import (
    interruption,
    not_started,
    taken_rollback_state,
    waiting_state,
)
from edge_agent.errors import EdgeAgentError, ModelUpdateError
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.supervisor import Supervisor
from edge_agent.inference.switching import switched
from edge_agent.inference.worker import run_once
from edge_agent.updates.agent import UpdateRunner, current_state
from edge_agent.updates.golden import check_golden, load_golden
from edge_agent.updates.installer import UpdateInstaller
from edge_agent.updates.journal import FINAL, IN_PROGRESS, INTERRUPTED, RequestJournal, final_state
from edge_agent.updates.manifest import Manifest
from edge_agent.updates.release import InstalledRelease
from edge_agent.updates.requests import LEDGER_FILE, RequestLedger
from edge_agent.updates.store import ModelStore

logger = logging.getLogger(__name__)

SWITCH_TIMEOUT = 15.0
SUPERSEDED = "superseded"
# How a failed health check is reported (the installer then rolls the store back).
_REASONS = {
    Outcome.UNHEALTHY: "health_check_failed",
    Outcome.STOPPED: INTERRUPTED,
    Outcome.SUPERSEDED: SUPERSEDED,
}


class UpdateService:
    """Gives the update library the daemon's validator and hot swap, and runs its command runner.

    Args:
        config: the daemon config.
        base_options: the configured model's options.
        supervisor: the running inference supervisor.
        report: publishes a state dict retained on the ``model`` topic (must not block).
    """

    health_grace = 10.0  # seconds before a health check short of frames says it waits

    def __init__(
        self, config: Config, base_options: ModelOptions, supervisor: Supervisor | None, report: Any
    ):
        self.config = config
        self.base = base_options
        self.supervisor = supervisor
        self._report = report
        self.keys = trusted_keys(config)  # ConfigError naming updates.trusted_keys[N]
        self.store = ModelStore(config.device.state_dir, keep_versions=config.updates.keep_versions)
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
        self._ledger = RequestLedger(self.store.root / LEDGER_FILE)  # the runner's, at start
        reject = self.installer.reject
        self._inbox = CommandInbox(
            config.updates.queue_depth,
            lambda r, m, rid: reject(r, m, request_id=rid),
            self._journal,
            ledger=self._ledger,
            repeat=self.installer.repeat,
        )
        self._answers: list[Held] = []  # rollbacks a trial's switch back answers
        self._asked: dict[str, Any] | None = None  # the last in-progress state

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

    def start(self, supervisor: Supervisor, failed: str = "") -> None:
        """Publish the current state and start taking commands (and polling, if set).

        Args:
            failed: why the store's active release would not start (the daemon then runs
                its configured model), "" when it did.
        """
        self.supervisor = supervisor
        state = current_state(self.installer)
        failed = failed if state["name"] is not None else ""
        self._progress(not_started(state, failed) if failed else state)
        self._answer_interrupted(serving_release=not failed)
        u = self.config.updates
        self._runner = UpdateRunner(
            self.installer,
            poll_url=u.manifest_url or None,
            poll_interval=u.poll_interval,
            queue_depth=u.queue_depth,
            ledger=self._ledger,
            journal=self._journal,
        ).start()
        self._inbox.attach(self._runner)

    def stop(self, timeout: float) -> None:
        """Cancel downloads, stop the command thread and join the judging ones (bounded)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        if self._runner is not None:
            self._runner.stop(timeout)
        self._inbox.join(max(0.0, deadline - time.monotonic()))
        for held in self._inbox.drain():  # the daemon never got as far as taking them
            self._interrupted(held)

    def handle(self, command: str, payload: bytes, topic: str) -> None:
        """MQTT callback: queue a command without blocking (never raises).

        Commands that arrive before :meth:`start` are kept and run once it has.
        """
        try:
            self._inbox.handle(command, payload, topic)
        except Exception:  # an MQTT callback must never raise
            logger.exception("model update: cannot take a command from %.64r", topic)

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
        if stopping:
            state = interruption(state, self._asked)
        self._journal.observe(state, stopping=stopping)
        self.last_state = state
        if state.get("state") in IN_PROGRESS:
            self._asked = state
        self._report(state)
        if state.get("state") in FINAL:
            self._answer_taken(state)

    def _answer_interrupted(self, serving_release: bool = True) -> None:
        """Publish the final state of a request the previous run left unfinished."""
        pending = self._journal.take()
        if pending is None:
            return
        try:
            active = self.store.active() if serving_release else None
        except ModelUpdateError:
            active = None
        state = final_state(pending, (active.name, active.version) if active else None)
        key = pending.key()
        if key is not None:  # an answer like any: the command sent again gets it again
            self._ledger.answer(key, state)  # (interrupted is not remembered: it runs)
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
        for key in self._journal.take_held():  # rollbacks the cut trial had taken
            doc = taken_rollback_state(active, key.request_id, f"{pending.name}@{pending.version}")
            self._ledger.answer(key, doc)  # recovery went back: their switch back is done
            self._journal.unqueue(key.request_id)
            self._progress(doc)

    def _answer_taken(self, final: dict[str, Any]) -> None:
        """Answer the rollbacks taken by a trial that went back, after the trial's own
        ``final`` state (the store has gone back by then)."""
        answers, self._answers = self._answers, []
        if not answers:
            return
        try:
            now = self.store.active()
        except ModelUpdateError:
            now = None
        tried = final.get("from_version")
        for held in answers:
            doc = taken_rollback_state(now, held.request_id, tried)
            if held.key is not None and self._runner is not None:
                self._runner.ledger.answer(held.key, doc)  # recorded before it is published
            self._journal.unqueue(held.request_id)  # taken by the trial, it was journalled
            self._progress(doc)

    def _interrupted(self, held: Held) -> None:
        """Answer a command the stopping daemon will not run."""
        if held.key is not None and self._runner is not None:
            self._runner.ledger.forget(held.key)
        self.installer.reject(
            INTERRUPTED,
            "the daemon stopped before it ran this command; send it again",
            request_id=held.request_id,
        )
        self._journal.unqueue(held.request_id)  # kept by the inbox, it was journalled

    # ------------------------------------------------- validator and hot swap
    def validate(self, root: Path, manifest: Manifest) -> None:
        """Load the release in a separate worker: adapter fit, allocate, invoke, golden.

        Raises:
            ModelUpdateError: ``incompatible`` (does not fit / cannot run here),
                ``health_check_failed`` (golden output mismatch) or ``interrupted``
                (the daemon is stopping).
        """
        self._check_stopping(manifest.label, "before its validation")
        options = release_options(self.base, root, manifest)
        try:
            gen = self.supervisor.prepare(
                options,
                {"name": manifest.name, "version": str(manifest.version)},
                cancel=self._stop,
            )
        except EdgeAgentError as exc:
            self._check_stopping(manifest.label, "during its validation", exc)
            raise ModelUpdateError("incompatible", f"{manifest.label}: {exc}") from exc
        try:
            golden = load_golden(root, manifest)
            if golden is not None:
                outputs = run_once(gen.worker, golden.input, self.config.inference.deadline)
                check_golden(outputs, golden, label=manifest.label)
        except EdgeAgentError as exc:
            if isinstance(exc, ModelUpdateError):
                raise
            self._check_stopping(manifest.label, "during its validation", exc)
            raise ModelUpdateError("health_check_failed", f"{manifest.label}: {exc}") from exc
        finally:
            gen.worker.stop(2.0)

    def _check_stopping(self, label: str, when: str, cause: Exception | None = None) -> None:
        """Raise ``interrupted`` when the daemon is stopping: a failure then says nothing
        about the release."""
        if self._stop.is_set():
            raise ModelUpdateError(INTERRUPTED, f"{label}: the daemon stopped {when}") from cause

    def swap(self, release: InstalledRelease) -> None:
        """Switch the pipeline to a release between two frames, then check its health.

        Healthy means ``updates.health_frames`` frames inferred without an invoke error
        or a worker death (see :mod:`edge_agent.daemon.trial`: a release on trial waits
        for those frames however long the cameras are down). Otherwise the previous
        model (kept running meanwhile) is switched back in and this raises, so the
        installer reports ``rolled_back``.

        Raises:
            ModelUpdateError: ``swap_failed``, ``health_check_failed``, ``superseded``
                (a command that would change the model came while it waited for
                frames) or ``interrupted``.
        """
        sup = self.supervisor
        self._check_stopping(release.label, "before the switch")
        options = release_options(self.base, release.path, release.manifest)
        try:
            model = sup.prepare(options, _meta(release), cancel=self._stop)
        except EdgeAgentError as exc:
            self._check_stopping(release.label, "during the switch", exc)
            raise ModelUpdateError("swap_failed", f"{release.label}: {exc}") from exc
        ticket = sup.switches.switch_to(model)
        if not switched(sup.switches, ticket, SWITCH_TIMEOUT, self._stop):
            self._check_stopping(release.label, "during the switch")
            raise ModelUpdateError("swap_failed", f"{release.label}: pipeline did not switch")
        verdict = self._health(release)
        if verdict.outcome is Outcome.HEALTHY:
            sup.switches.commit()
            return
        problem = verdict.detail
        if verdict.outcome is Outcome.UNHEALTHY:
            logger.error(
                "model %s: unhealthy after the switch (%s); switching back", release.label, problem
            )
        else:  # no verdict on the model itself
            logger.warning("model %s: %s; switching back", release.label, problem)
        # A rollback is never cancelled: the store goes back too, so if the pipeline is
        # slow (or stopping), it adopts the rollback when it next runs, and no request
        # outranks it meanwhile.
        ticket = sup.switches.rollback()
        if ticket is None:
            logger.error("model %s: no previous model to switch back to", release.label)
        elif not self._stop.is_set() and not ticket.wait(SWITCH_TIMEOUT):
            logger.warning("model %s: switch back still pending", release.label)
        raise ModelUpdateError(_REASONS[verdict.outcome], f"{release.label}: {problem}")

    def _health(self, release: InstalledRelease) -> Verdict:
        """Watch the frames on the new model until a verdict.

        A release on trial (an install) waits for its frames however long that takes,
        and says so; a rollback's target (it served before) is accepted after the grace
        without them, as there is nothing safer to go back to.
        """
        sup = self.supervisor
        need = self.config.updates.health_frames
        grace = max(self.health_grace, need * 0.5)
        on_trial = self._on_trial(release)
        if on_trial:
            self._inbox.open_trial()
        try:
            verdict = HealthWatch(
                lambda: Counters(sup.completed, sup.errors, sup.last_error),
                need,
                self._stop,
                grace=grace,
                on_waiting=lambda frames: self._waiting(release, frames, need, on_trial),
                yield_to=self._inbox.yield_to if on_trial else lambda: "accepted",
            ).run()
        finally:
            taken = self._inbox.close_trial() if on_trial else []
        if verdict.outcome is Outcome.SUPERSEDED and not on_trial:
            logger.warning(
                "model %s: %d frames to check health (camera idle?); it served before: accepting",
                release.label,
                verdict.frames,
            )
            verdict = verdict._replace(outcome=Outcome.HEALTHY)
        for held in taken:
            if verdict.outcome is Outcome.HEALTHY:
                self._inbox.forward(held)  # confirmed: the rollback runs as usual after it
            elif verdict.outcome is Outcome.STOPPED:
                self._interrupted(held)
            else:
                self._answers.append(held)  # the switch back is the rollback asked for
        return verdict

    def _on_trial(self, release: InstalledRelease) -> bool:
        """True when the store holds ``release`` on trial (an install, not a rollback)."""
        ptr = self.store.safe_pointer() or {}
        return bool(ptr.get("trial")) and self.store.is_active(release)

    def _waiting(self, release: InstalledRelease, frames: int, need: int, on_trial: bool) -> None:
        """The grace passed with too few frames: say the trial stays open (published)."""
        if not on_trial:
            return
        logger.warning(
            "model %s: %d of %d health-check frames after the grace (camera down or idle?); "
            "the trial stays open until they are inferred",
            release.label,
            frames,
            need,
        )
        rid = (self._asked or {}).get("request_id")
        self._progress(waiting_state(release, frames, need, rid))


def _meta(release: InstalledRelease) -> dict[str, Any]:
    """Name and version shown in results and status."""
    return {"name": release.name, "version": release.version}
