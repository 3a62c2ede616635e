"""Pure transitions of a stored rollout: device states in, decisions out.

The runner feeds these with what the broker says and the clock; they only change
the :class:`Rollout` in memory, so every rule (timeouts, the threshold, resume) is
tested without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from edge_agent.tools.release.rollout.plan import should_halt
from edge_agent.tools.release.rollout.store import DeviceStep, Rollout, RolloutStatus

_FROM_DEVICE = {s.value: s for s in DeviceStep}


class Verdict(str, Enum):
    """What the current wave calls for."""

    WAIT = "wait"  # devices still working
    HALT = "halt"  # the wave's failures exceed the threshold
    NEXT = "next"  # every device of the wave is done, within the threshold


def observe(rollout: Rollout, device: str, doc: Mapping[str, Any], now: float) -> bool:
    """Apply a device's ``model`` state if it answers this rollout; True when it changed.

    States of other requests are ignored, and so is anything for a device already
    done (a late ``active`` after a timeout does not undo the timeout: the threshold
    decided on it already), except ``active`` turning ``rolled_back`` while soaking.
    """
    record = rollout.devices.get(device)
    if record is None or doc.get("request_id") != rollout.request_id:
        return False
    step = _FROM_DEVICE.get(str(doc.get("state")))
    if step is None or step == record.step:
        return False
    late_rollback = record.step is DeviceStep.ACTIVE and step is DeviceStep.ROLLED_BACK
    if record.step.done and not late_rollback:  # e.g. the guard rolls back while soaking
        return False
    if record.step is DeviceStep.PENDING:
        return False  # a retained answer from before this rollout sent anything
    record.step = step
    record.reason = str(doc.get("reason") or "")
    if record.sent_at is None:
        record.sent_at = now
    if step.done:
        record.done_at = now
    return True


def expire(rollout: Rollout, now: float) -> list[str]:
    """Time out the devices silent past the device timeout; returns them."""
    out = []
    limit = rollout.plan.device_timeout
    for device in rollout.waves[rollout.wave] if rollout.wave < len(rollout.waves) else ():
        record = rollout.devices[device]
        if not record.step.done and record.sent_at is not None and now - record.sent_at > limit:
            record.step, record.reason, record.done_at = DeviceStep.TIMEOUT, "no_answer", now
            out.append(device)
    return out


def paused(rollout: Rollout, gap: float) -> None:
    """The operator did not listen for ``gap`` seconds (its process was suspended, a
    laptop lid closed): that silence is not the devices'. Every device still waiting in
    the current wave gets ``gap`` more seconds before it times out; states sent meanwhile
    wait unread on the connection and are taken in next."""
    for device in rollout.waves[rollout.wave] if rollout.wave < len(rollout.waves) else ():
        record = rollout.devices[device]
        if not record.step.done and record.sent_at is not None:
            record.sent_at += gap


def verdict(rollout: Rollout) -> Verdict:
    """Halt as soon as the wave's failures exceed the threshold, else wait or move on."""
    wave = rollout.waves[rollout.wave]
    if should_halt(rollout.plan.threshold, rollout.wave_failures(rollout.wave), len(wave)):
        return Verdict.HALT
    if all(rollout.devices[d].step.done for d in wave):
        return Verdict.NEXT
    return Verdict.WAIT


def to_send(rollout: Rollout, answered: set[str]) -> list[str]:
    """Devices of the current wave that still need the command.

    ``PENDING`` devices were never sent it. A device sent it (or marked ``SENDING``
    before a crash that may have come before or after the publish) that has not answered
    for good gets it again unless ``answered`` (its retained state carries this rollout's
    request id) says it arrived: on a resume, a device that answered while the operator
    was away and then restarted has only its startup state on the broker, and without
    the command again it would time out as silent. A re-send is the same bytes under the
    same request id, which the device's request ledger drops (still running) or answers
    again, so the install runs at most once either way.
    """
    out = []
    for device in rollout.waves[rollout.wave]:
        step = rollout.devices[device].step
        if step is DeviceStep.PENDING or (not step.done and device not in answered):
            out.append(device)
    return out


def skip_rest(rollout: Rollout, reason: str, now: float) -> None:
    """Mark every device not yet sent as skipped (halt or abort)."""
    for record in rollout.devices.values():
        if record.step in (DeviceStep.PENDING, DeviceStep.SENDING) and record.sent_at is None:
            record.step, record.reason, record.done_at = DeviceStep.SKIPPED, reason, now


def sent_after_all(rollout: Rollout, device: str, doc: Mapping[str, Any], now: float) -> bool:
    """Follow again a device an abort marked skipped that did get the command (the runner
    died between sending it and writing so): its state carries this rollout's request id.

    Returns:
        True when the device is ``sent`` again (``observe`` then takes its state).
    """
    record = rollout.devices.get(device)
    if record is None or doc.get("request_id") != rollout.request_id:
        return False
    if (record.step, record.reason, record.sent_at) != (DeviceStep.SKIPPED, "aborted", None):
        return False
    record.step, record.reason, record.sent_at, record.done_at = DeviceStep.SENT, "", now, None
    return True


def in_flight(rollout: Rollout, now: float) -> int:
    """Devices sent the command that have not answered for good, within the device timeout."""
    limit = rollout.plan.device_timeout
    return sum(
        1
        for r in rollout.devices.values()
        if r.sent_at is not None and not r.step.done and now - r.sent_at <= limit
    )


def adopt(rollout: Rollout, on_disk: Rollout | None, now: float) -> bool:
    """Take into the runner's copy what ``abort`` wrote to the file; True on an abort.

    The runner holds the freshest device states, so it writes the file; ``abort`` (run
    meanwhile, usually in another process) only sets the status and marks devices
    skipped or rolled back, and those marks are carried over instead of overwritten.
    """
    if on_disk is None:
        return False
    for device, record in on_disk.devices.items():
        mine = rollout.devices.get(device)
        if mine is not None and record.rollback_sent:
            mine.rollback_sent = True
    if rollout.status is RolloutStatus.RUNNING and on_disk.status is RolloutStatus.ABORTED:
        rollout.status = RolloutStatus.ABORTED
        skip_rest(rollout, "aborted", now)
        return True
    return False


def halt(rollout: Rollout, now: float) -> None:
    """Stop the rollout in the current wave: nothing more is sent."""
    failures = rollout.wave_failures(rollout.wave)
    size = len(rollout.waves[rollout.wave])
    rollout.status = RolloutStatus.HALTED
    rollout.halted_reason = (
        f"wave {rollout.wave + 1}: {failures} of {size} failed (threshold {rollout.plan.threshold})"
    )
    rollout.wave_ended[rollout.wave] = now
    skip_rest(rollout, "halted", now)


def finish_wave(rollout: Rollout, now: float) -> None:
    """Close the current wave; the rollout completes after the last one."""
    rollout.wave_ended[rollout.wave] = now
    rollout.wave += 1
    if rollout.wave >= len(rollout.waves):
        rollout.status = RolloutStatus.COMPLETED
