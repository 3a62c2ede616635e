"""The pure part of a rollout: waves, thresholds, timeouts, membership, offline policy.

Waves are **cumulative**, as in AWS IoT Jobs' rollout rates: ``1,5%,25%,100%`` means
"1 device, then up to 5 % of the membership in total, then 25 %, then everyone".
A percentage is rounded *up* (``ceil``) so that a small fleet still gets a canary; a
wave that would add no device (a tiny fleet) is dropped, and the last wave always
reaches the whole membership even when the plan stops short of ``100%``.

The failure threshold is measured within the wave: ``3`` halts once more than 3 of
the wave's devices failed or rolled back; ``5%`` halts once they exceed 5 % of the
wave's size. A device silent past the per-device timeout counts as a failure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, NamedTuple

from edge_agent.updates.commands import check_topic_level


class Amount(NamedTuple):
    """A count (``5``) or a percentage (``5%``) of a whole."""

    value: float
    percent: bool

    @classmethod
    def parse(cls, text: str) -> Amount:
        """Parse ``N`` or ``N%``.

        Raises:
            ValueError: not a non-negative number, or a percentage above 100.
        """
        raw = text.strip()
        percent = raw.endswith("%")
        try:
            value = float(raw[:-1] if percent else raw)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a count or a percentage") from exc
        if not math.isfinite(value) or value < 0 or (percent and value > 100):
            raise ValueError(f"{text!r} must be a count >= 0 or a percentage 0-100%")
        if not percent and value != int(value):
            raise ValueError(f"{text!r}: a count must be a whole number")
        return cls(value, percent)

    def of(self, whole: int) -> int:
        """This amount of ``whole`` devices (percentages rounded up)."""
        if self.percent:
            # round() first so that 5% of 20 is 1, not ceil(1.0000000002) = 2
            return min(whole, math.ceil(round(self.value * whole / 100, 9)))
        return min(whole, int(self.value))

    def __str__(self) -> str:
        number = f"{self.value:g}"
        return f"{number}%" if self.percent else number


class OfflinePolicy(str, Enum):
    """What to do with member devices that are offline when the rollout starts."""

    SKIP = "skip"  # leave them out, reported as skipped
    WAIT = "wait"  # wait up to offline_wait seconds for them, then skip them
    FAIL = "fail"  # refuse to start


class Plan(NamedTuple):
    """A rollout plan, as given by the operator."""

    waves: tuple[Amount, ...]
    threshold: Amount
    soak: float = 0.0  # seconds between waves
    device_timeout: float = 600.0  # seconds a device may take once sent the command
    offline: OfflinePolicy = OfflinePolicy.SKIP
    offline_wait: float = 0.0

    @classmethod
    def parse(cls, waves: str, threshold: str, **rest: Any) -> Plan:
        """Build a plan from ``"1,5%,25%,100%"`` and ``"5%"`` (plus the other fields).

        Raises:
            ValueError: an empty or decreasing wave list, or a bad amount or time.
        """
        amounts = tuple(Amount.parse(w) for w in waves.split(",") if w.strip())
        if not amounts:
            raise ValueError("a plan needs at least one wave")
        plan = cls(amounts, Amount.parse(threshold), **rest)
        for name in ("soak", "device_timeout", "offline_wait"):
            value = getattr(plan, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if plan.device_timeout <= 0:
            raise ValueError("device_timeout must be > 0")
        return plan._replace(offline=OfflinePolicy(plan.offline))

    def describe(self) -> str:
        """The plan in one line, as the operator wrote it."""
        return (
            f"waves {','.join(map(str, self.waves))}, halt above {self.threshold} failed, "
            f"soak {self.soak:g}s, device timeout {self.device_timeout:g}s, "
            f"offline {self.offline.value}"
        )


def wave_sizes(waves: Sequence[Amount], members: int) -> list[int]:
    """The number of devices each wave *adds*, for ``members`` devices.

    Cumulative targets are taken in order, never decrease, drop waves that add no
    device, and the last wave takes whoever is left.
    """
    sizes: list[int] = []
    done = 0
    for amount in waves:
        target = max(done, amount.of(members))
        if target > done:
            sizes.append(target - done)
            done = target
    if done < members:
        if sizes and waves and waves[-1].of(members) < members:
            sizes.append(members - done)
        elif sizes:
            sizes[-1] += members - done
        else:
            sizes.append(members - done)
    return sizes


def split_waves(waves: Sequence[Amount], devices: Sequence[str]) -> list[list[str]]:
    """The devices of each wave, in the membership's order."""
    out, start = [], 0
    for size in wave_sizes(waves, len(devices)):
        out.append(list(devices[start : start + size]))
        start += size
    return out


def should_halt(threshold: Amount, failures: int, wave_size: int) -> bool:
    """True once the wave's failures exceed the threshold."""
    if failures <= 0:
        return False
    if threshold.percent:
        return failures * 100 > threshold.value * wave_size
    return failures > threshold.value


class Member(NamedTuple):
    """A device as its retained status describes it."""

    device: str
    online: bool
    device_type: str | None


class Membership(NamedTuple):
    """Who takes part, and who is left out and why."""

    targets: tuple[str, ...]
    offline: tuple[str, ...]
    incompatible: tuple[str, ...]


def member_from_status(
    device: str, doc: Mapping[str, Any], group: str, available: str | None = None
) -> Member | None:
    """The device, when its retained status lists ``group``; else None.

    ``available`` is the device's retained ``available`` payload (its last will says
    ``offline``); without one, the status' own ``state`` decides.
    """
    groups = doc.get("groups")
    if not isinstance(groups, list) or group not in groups:
        return None
    try:
        check_topic_level(device, "device id")
    except ValueError:
        return None
    if available is not None:
        online = available == "online"
    else:
        online = doc.get("state") in ("starting", "running")
    kind = doc.get("device_type")
    return Member(device, online, kind if isinstance(kind, str) and kind else None)  # "" = untyped


def membership(members: Iterable[Member], compatible: Sequence[str] = ()) -> Membership:
    """Split the members into targets, offline and incompatible (each sorted).

    A device whose status names its type is left out when the release lists
    ``compatible`` types and its type is not one of them; a device that does not
    say its type is kept (the device itself refuses an incompatible release).
    """
    targets, offline, bad = [], [], []
    for m in sorted(members, key=lambda m: m.device):
        if compatible and m.device_type is not None and m.device_type not in compatible:
            bad.append(m.device)
        elif not m.online:
            offline.append(m.device)
        else:
            targets.append(m.device)
    return Membership(tuple(targets), tuple(offline), tuple(bad))


def request_id_for(rollout_id: str) -> str:
    """The request id every device of a rollout gets (one command per device)."""
    return f"ro-{rollout_id}"[:64]
