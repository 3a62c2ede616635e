"""Run a stored rollout over MQTT: send wave by wave, follow the devices, halt, resume.

Exactly-once in effect, across operator crashes:

1. Before a wave's commands go out, every device of the wave is marked ``sending``
   and the rollout file is written (atomically). Only then are the commands
   published (QoS 1, each acknowledged by the broker) and the devices marked ``sent``.
2. Every device of a rollout gets the same request id and the same payload bytes,
   stored in the rollout file. The device's request ledger (``updates/requests.py``)
   drops a repeat while the request runs and answers it from its record once done,
   so a repeated command never installs twice.
3. On resume, the retained ``{prefix}/{id}/model`` states are read first. A
   ``sending`` device whose state already carries the rollout's request id got the
   command and is not sent it again; only a device with no trace of it is re-sent.

So a device is sent the command again only when the operator died between marking it
and the device's first state, and even then it installs once.

``abort`` may run in another process while the runner runs: both rewrite the file under
its lock, the runner reads it back at least every _SAVE_EVERY seconds, and an abort it
finds there ends the run before anything more is sent.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.errors import ModelUpdateError
from edge_agent.publishing.settings import MqttSettings
from edge_agent.publishing.topics import group_status_request
from edge_agent.tools.release.operator import read_envelope
from edge_agent.tools.release.push import _Link
from edge_agent.tools.release.rollout import steps
from edge_agent.tools.release.rollout.plan import (
    Member,
    OfflinePolicy,
    Plan,
    member_from_status,
    membership,
    request_id_for,
    split_waves,
)
from edge_agent.tools.release.rollout.store import (
    DeviceRecord,
    DeviceStep,
    Rollout,
    RolloutStatus,
    RolloutStore,
    new_rollout_id,
)
from edge_agent.updates.commands import (
    ROLLBACK,
    UPDATE,
    build_update_command,
    check_topic_level,
    device_command_topic,
)
from edge_agent.updates.manifest import MANIFEST_FILE, parse_manifest
from edge_agent.updates.signing import parse_envelope

logger = logging.getLogger(__name__)

Progress = Callable[[Rollout], None]
_SAVE_EVERY = 0.5  # seconds: state changes are batched into one atomic write at most this often
RUNNER_STOP_S = 30.0  # abort waits so long for a runner to see it, end, and say whom it sent
_TURN = 0.25  # seconds a follow turn listens for device states
_AWAY = 2.0  # a turn longer than this: the process did not run (suspended), not the devices


class _StatusLink(_Link):
    """push's link, also subscribed to ``available`` (on every reconnect too)."""

    def _on_connect(self, client, userdata, flags, rc, props) -> None:  # noqa: ANN001
        """Add the ``available`` filter, then subscribe as push does."""
        available = self._topics[0].rsplit("/", 1)[0] + "/available"
        if available not in self._topics:
            self._topics.append(available)
        super()._on_connect(client, userdata, flags, rc, props)


class _Fleet:
    """What the broker says about the devices: statuses, availability, model states."""

    def __init__(self, broker: MqttSettings, prefix: str):
        self.link = _StatusLink(broker, prefix)
        self.status: dict[str, dict] = {}
        self.available: dict[str, str] = {}
        self.model: dict[str, dict] = {}

    def pump(self, until: float) -> list[str]:
        """Take messages until ``until`` (monotonic); returns devices whose model state came."""
        changed = []
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return changed
            try:
                topic, payload = self.link.messages.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            parts = topic.split("/")
            device, leaf = parts[-2], parts[-1]
            if leaf == "available":
                self.available[device] = payload.decode("utf-8", "replace")
                continue
            try:
                doc = json.loads(payload) if payload else None
            except ValueError:
                continue
            if not isinstance(doc, dict):
                continue
            if leaf == "status":
                self.status[device] = doc
            elif leaf == "model":
                self.model[device] = doc
                changed.append(device)

    def members(self, group: str) -> list[Member]:
        """Every device whose retained status lists ``group``."""
        found = (
            member_from_status(d, doc, group, self.available.get(d))
            for d, doc in self.status.items()
        )
        return [m for m in found if m is not None]

    def close(self) -> None:
        """Disconnect."""
        self.link.close()


def start(
    release_dir: str | Path,
    *,
    group: str,
    plan: Plan,
    broker: MqttSettings,
    prefix: str,
    base_url: str,
    store: RolloutStore,
    discover_seconds: float = 2.0,
    force: bool = False,
    rollout_id: str | None = None,
) -> Rollout:
    """Discover the group from the devices' retained status, plan the waves, save.

    Raises:
        ModelUpdateError: ``bad_manifest``, ``no_devices`` (nobody online in the group),
            ``devices_offline`` (``fail`` policy), ``rollout_exists`` (resumed, not replaced).
        PublishError: the broker is unreachable.
    """
    check_topic_level(group, "group")
    root = Path(release_dir)
    envelope = read_envelope(root / MANIFEST_FILE)
    manifest = parse_manifest(parse_envelope(envelope).manifest)
    rid = rollout_id or new_rollout_id()
    store.refuse_existing(rid)  # checks the id before anything is published
    fleet = _Fleet(broker, prefix)
    try:
        # Retained statuses arrive right after SUBACK where the broker gives them to a
        # wildcard subscription (RabbitMQ 3.10 does not); the request makes every member
        # of the group answer live anyway.
        fleet.link.publish(group_status_request(prefix, group), b"{}")
        end = time.monotonic() + discover_seconds
        fleet.pump(end)
        split = membership(fleet.members(group), manifest.compatible)
        if split.offline and plan.offline is OfflinePolicy.WAIT:
            end = time.monotonic() + plan.offline_wait
            while split.offline and time.monotonic() < end:
                fleet.pump(min(end, time.monotonic() + 0.5))
                split = membership(fleet.members(group), manifest.compatible)
    finally:
        fleet.close()
    if split.offline and plan.offline is OfflinePolicy.FAIL:
        raise ModelUpdateError("devices_offline", f"offline in {group}: {list(split.offline)}")
    if not split.targets:
        raise ModelUpdateError("no_devices", f"no online device announces group {group!r}")
    request_id = request_id_for(rid)
    payload = build_update_command(
        envelope=envelope, base_url=base_url, request_id=request_id, force=force
    )
    waves = split_waves(plan.waves, split.targets)
    rollout = Rollout(
        id=rid, release=str(root.resolve()), label=manifest.label, prefix=prefix, group=group,
        plan=plan, request_id=request_id, payload=payload.decode(), created=time.time(),
        waves=waves,
        devices={d: DeviceRecord(wave=i) for i, w in enumerate(waves) for d in w},
        left_out={**{d: "offline" for d in split.offline},
                  **{d: "incompatible" for d in split.incompatible}},
    )  # fmt: skip
    store.create(rollout)
    logger.info("rollout %s: %s to %s, %s", rid, manifest.label, group, plan.describe())
    return rollout


class Runner:
    """Drive one stored rollout to an end (completed or halted), or until stopped.

    ``Runner(store, rollout_id, broker).run(progress=callback)`` returns the final
    :class:`Rollout`; ``progress(rollout)`` is called after every change. Setting
    ``stop`` (a threading.Event) leaves the rollout ``running`` and resumable.
    """

    def __init__(self, store: RolloutStore, rollout_id: str, broker: MqttSettings):
        self.store, self.rollout_id, self.broker = store, rollout_id, broker
        self.stop = threading.Event()
        self._saved = self._polled = 0.0

    def run(self, progress: Progress | None = None) -> Rollout:
        """Run (or resume) the rollout; returns it in its final or stopped state.

        Raises:
            ModelUpdateError: ``rollout_busy`` (another runner drives it: two would send
                every command twice), or ``no_rollout``/``bad_rollout``.
        """
        with self.store.running(self.rollout_id):
            return self._run(progress)

    def _run(self, progress: Progress | None) -> Rollout:
        """Run, holding the run lock."""
        ro = self.store.load(self.rollout_id)
        progress = progress or (lambda _r: None)
        if ro.status is not RolloutStatus.RUNNING:
            progress(ro)
            return ro
        fleet = _Fleet(self.broker, ro.prefix)
        try:
            # Model states first: a resumed rollout learns who got the command, from the
            # retained states or, where wildcards get none (RabbitMQ 3.10), the answers.
            fleet.link.publish(group_status_request(ro.prefix, ro.group), b"{}")
            fleet.pump(time.monotonic() + 1.0)
            for device, doc in fleet.model.items():
                steps.observe(ro, device, doc, time.time())
            self._save(ro, force=True)
            progress(ro)
            while ro.status is RolloutStatus.RUNNING and not self.stop.is_set():
                self._wave(ro, fleet, progress)
        finally:
            self._save(ro, force=True)
            fleet.close()
        progress(ro)
        return ro

    def _wave(self, ro: Rollout, fleet: _Fleet, progress: Progress) -> None:
        """Send the current wave, follow it to a verdict, then soak."""
        index = ro.wave
        ro.wave_started.setdefault(index, time.time())
        answered = {d for d, doc in fleet.model.items() if doc.get("request_id") == ro.request_id}
        pending = steps.to_send(ro, answered)
        if pending:
            for device in pending:
                ro.devices[device].step = DeviceStep.SENDING
            self._save(ro, force=True)  # intent first: see the module docstring
            if ro.status is not RolloutStatus.RUNNING:  # aborted meanwhile: send nothing
                return
            for device in pending:
                fleet.link.publish(device_command_topic(ro.prefix, device, UPDATE),
                                   ro.payload.encode())  # fmt: skip
                record = ro.devices[device]
                record.sent_at = record.sent_at or time.time()
                if record.step is DeviceStep.SENDING:
                    record.step = DeviceStep.SENT
            self._save(ro, force=True)
            logger.info("rollout %s: wave %d sent to %d devices", ro.id, index + 1, len(pending))
        progress(ro)
        verdict = self._follow(ro, fleet, progress, until=None)
        if verdict is steps.Verdict.NEXT and ro.plan.soak > 0 and index + 1 < len(ro.waves):
            verdict = self._follow(ro, fleet, progress, until=time.monotonic() + ro.plan.soak)
        if self.stop.is_set() or ro.status is not RolloutStatus.RUNNING:
            return  # stopped (resumable) or aborted: run() saves
        if verdict is steps.Verdict.HALT:
            steps.halt(ro, time.time())
            logger.warning("rollout %s halted: %s", ro.id, ro.halted_reason)
        else:
            steps.finish_wave(ro, time.time())
        self._save(ro, force=True)
        progress(ro)

    def _follow(self, ro: Rollout, fleet: _Fleet, progress: Progress, until: float | None):
        """Observe states until a halt, the wave's end (or ``until``, for a soak), or stop."""
        # Turns are timed on the wall clock, the devices' timeout clock: a machine asleep
        # (a laptop lid closed) stops CLOCK_MONOTONIC, so only the wall clock shows it.
        turn = time.time()
        while not self.stop.is_set():
            changed = fleet.pump(time.monotonic() + _TURN)
            last, turn = turn, time.time()
            if turn - last > _AWAY:  # suspended: states may wait unread, see steps.paused
                logger.warning("rollout %s: not listening for %.0f s", ro.id, turn - last)
                steps.paused(ro, turn - last - _TURN)
            now = time.time()
            touched = [d for d in changed if steps.observe(ro, d, fleet.model[d], now)]
            touched += steps.expire(ro, now)
            if touched:
                self._save(ro)
                progress(ro)
            if self._poll(ro):
                return steps.Verdict.WAIT  # aborted by another process
            verdict = steps.verdict(ro)
            if verdict is steps.Verdict.HALT:
                return verdict
            if until is None and verdict is steps.Verdict.NEXT:
                return verdict
            if until is not None and time.monotonic() >= until:
                return verdict
        return steps.Verdict.WAIT

    def _save(self, ro: Rollout, force: bool = False) -> None:
        """Write the rollout file, at most every _SAVE_EVERY seconds unless forced."""
        if force or time.monotonic() - self._saved >= _SAVE_EVERY:
            self._sync(ro, write=True)
            self._saved = time.monotonic()

    def _poll(self, ro: Rollout) -> bool:
        """Look for an abort in the file, at most every _SAVE_EVERY s; True once aborted."""
        if time.monotonic() - self._polled >= _SAVE_EVERY:
            self._sync(ro, write=False)
            self._polled = time.monotonic()
        return ro.status is RolloutStatus.ABORTED

    def _sync(self, ro: Rollout, write: bool) -> None:
        """Under the file's lock: take in an abort written by another process, then write."""
        with self.store.locked(ro.id):
            try:
                on_disk = self.store.load(ro.id)
            except ModelUpdateError:  # gone or damaged: the runner's copy is the truth
                on_disk = None
            if steps.adopt(ro, on_disk, time.time()):
                logger.warning("rollout %s aborted by another process: nothing more is sent", ro.id)
                write = True
            if write:
                self.store.save(ro)


def abort(
    store: RolloutStore, rollout_id: str, broker: MqttSettings | None = None,
    rollback: bool = False,
) -> Rollout:  # fmt: skip
    """Stop a rollout's further waves; with ``rollback``, roll back its active devices.

    With ``rollback``, the devices sent the update that have not answered for good are
    waited for first (each up to the device timeout): one turning active is rolled back
    too, one whose install fails is not taken a release further back. The rollback carries
    ``{request_id}-rb``: sent again (an abort repeated), the device answers, not reruns it.
    """
    with store.locked(rollout_id):  # a runner in another process merges this, see _sync
        ro = store.load(rollout_id)
        ro.status = RolloutStatus.ABORTED
        steps.skip_rest(ro, "aborted", time.time())
        store.save(ro)
    if rollback:
        if broker is None:
            raise ValueError("rollback needs the broker")
        with store.running(rollout_id, wait=RUNNER_STOP_S), store.locked(rollout_id):
            ro = store.load(rollout_id)
        payload = json.dumps({"request_id": f"{ro.request_id}-rb"[:64]}).encode()
        fleet = _Fleet(broker, ro.prefix)
        sent, targets, followed = [], [], set()
        try:
            _settle(ro, fleet, followed)
            targets = [d for d, r in ro.devices.items() if r.step is DeviceStep.ACTIVE]
            for device in targets:
                fleet.link.publish(device_command_topic(ro.prefix, device, ROLLBACK), payload)
                sent.append(device)
        finally:
            fleet.close()
            with store.locked(rollout_id):  # the runner may have written meanwhile
                seen, ro = ro, store.load(rollout_id)
                for device in followed:  # what it answered while the abort waited
                    ro.devices[device] = seen.devices[device]
                for device in sent:
                    ro.devices[device].rollback_sent = True
                store.save(ro)
        logger.info("rollout %s aborted; rollback sent to %d devices", ro.id, len(targets))
    return ro


def _settle(ro: Rollout, fleet: _Fleet, followed: set[str]) -> None:
    """Follow the devices sent the update (see :func:`abort`); adds them to ``followed``."""
    fleet.link.publish(group_status_request(ro.prefix, ro.group), b"{}")
    fleet.pump(time.monotonic() + 1.0)  # their retained states (or answers) first
    told = False
    while True:
        now = time.time()
        for device, doc in list(fleet.model.items()):
            again = steps.sent_after_all(ro, device, doc, now)
            if steps.observe(ro, device, doc, now) or again:
                followed.add(device)
        waiting = steps.in_flight(ro, now)
        if not waiting:
            return
        if not told:  # once
            logger.warning("rollout %s: abort waits for %d devices installing", ro.id, waiting)
        told = True
        fleet.pump(time.monotonic() + 1.0)
