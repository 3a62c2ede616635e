"""A rollout's durable state: one JSON file per rollout in the operator's state dir.

Every change is written with :func:`edge_agent.atomicfile.write_atomic` before the
runner acts on it, so a crash leaves either the old or the new file. The file holds
the exact command payload, so a resumed rollout re-sends byte-identical commands
(the device's request ledger then answers a repeat instead of running it again).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edge_agent.atomicfile import write_atomic
from edge_agent.errors import ModelUpdateError
from edge_agent.tools.release.rollout.plan import Amount, OfflinePolicy, Plan

_ID = re.compile(r"^[A-Za-z0-9._-]{1,40}$")


class RolloutStatus(str, Enum):
    """Where the rollout as a whole stands."""

    RUNNING = "running"  # started or resumable
    HALTED = "halted"  # the threshold was exceeded
    COMPLETED = "completed"  # every wave done within the threshold
    ABORTED = "aborted"  # the operator stopped it


class DeviceStep(str, Enum):
    """The operator's view of one device; device states keep their own names."""

    PENDING = "pending"  # not yet sent
    SENDING = "sending"  # intent recorded; the command may or may not be out
    SENT = "sent"  # the broker acknowledged the command
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    ACTIVE = "active"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    TIMEOUT = "timeout"  # silent past the device timeout: counts as failed
    SKIPPED = "skipped"  # never sent (offline, halted, aborted)

    @property
    def done(self) -> bool:
        """True when the device's part of the rollout is over."""
        return self in _DONE

    @property
    def failure(self) -> bool:
        """True for the outcomes the threshold counts."""
        return self in _FAILURES


_DONE = frozenset(
    {DeviceStep.ACTIVE, DeviceStep.FAILED, DeviceStep.ROLLED_BACK, DeviceStep.TIMEOUT,
     DeviceStep.SKIPPED}
)  # fmt: skip
_FAILURES = frozenset({DeviceStep.FAILED, DeviceStep.ROLLED_BACK, DeviceStep.TIMEOUT})


@dataclass
class DeviceRecord:
    """One device of the rollout."""

    wave: int
    step: DeviceStep = DeviceStep.PENDING
    reason: str = ""
    sent_at: float | None = None  # wall clock, when the command went out
    done_at: float | None = None
    rollback_sent: bool = False


@dataclass
class Rollout:
    """The whole durable state of a rollout."""

    id: str
    release: str
    label: str
    prefix: str
    group: str
    plan: Plan
    request_id: str
    payload: str  # the exact update command, re-sent as is on resume
    created: float
    status: RolloutStatus = RolloutStatus.RUNNING
    wave: int = 0  # the wave in progress (== len(waves) when all are done)
    waves: list[list[str]] = field(default_factory=list)
    wave_started: dict[int, float] = field(default_factory=dict)
    wave_ended: dict[int, float] = field(default_factory=dict)
    devices: dict[str, DeviceRecord] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)  # device -> why (offline...)
    halted_reason: str = ""

    def wave_failures(self, index: int) -> int:
        """Failed, rolled back or timed-out devices of wave ``index``."""
        return sum(1 for d in self.waves[index] if self.devices[d].step.failure)

    def to_json(self) -> dict[str, Any]:
        """The document written to disk."""
        doc = asdict(self)
        doc["plan"] = {
            **self.plan._asdict(),
            "waves": [str(w) for w in self.plan.waves],
            "threshold": str(self.plan.threshold),
            "offline": self.plan.offline.value,
        }
        doc["status"] = self.status.value
        doc["devices"] = {d: {**asdict(r), "step": r.step.value} for d, r in self.devices.items()}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Rollout:
        """Rebuild a rollout from :meth:`to_json` output.

        Raises:
            ValueError/KeyError/TypeError: the document is not a rollout.
        """
        p = doc["plan"]
        plan = Plan(
            tuple(Amount.parse(w) for w in p["waves"]), Amount.parse(p["threshold"]),
            float(p["soak"]), float(p["device_timeout"]), OfflinePolicy(p["offline"]),
            float(p["offline_wait"]),
        )  # fmt: skip
        devices = {
            d: DeviceRecord(**{**r, "step": DeviceStep(r["step"])})
            for d, r in doc["devices"].items()
        }
        rest = {k: v for k, v in doc.items() if k not in ("plan", "devices", "status")}
        rest["wave_started"] = {int(k): v for k, v in rest.get("wave_started", {}).items()}
        rest["wave_ended"] = {int(k): v for k, v in rest.get("wave_ended", {}).items()}
        return cls(plan=plan, devices=devices, status=RolloutStatus(doc["status"]), **rest)


def new_rollout_id() -> str:
    """A sortable, unique id: UTC time plus a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def default_state_dir() -> Path:
    """``$EDGE_AGENT_OPERATOR_DIR``, else ``$XDG_STATE_HOME/edge-agent/rollouts``."""
    explicit = os.environ.get("EDGE_AGENT_OPERATOR_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-agent" / "rollouts"


def check_rollout_id(rollout_id: str) -> str:
    """The id when it can name a rollout's file (1-40 of ``A-Za-z0-9._-``).

    Raises:
        ValueError: an id that is not a plain file name.
    """
    if not _ID.match(rollout_id):
        raise ValueError(f"bad rollout id {rollout_id!r}")
    return rollout_id


class RolloutStore:
    """The rollout files of one operator state dir."""

    def __init__(self, directory: str | Path | None = None):
        self.dir = Path(directory) if directory else default_state_dir()

    def path(self, rollout_id: str) -> Path:
        """The file of ``rollout_id``.

        Raises:
            ValueError: an id that is not a plain file name.
        """
        return self.dir / f"{check_rollout_id(rollout_id)}.json"

    @contextmanager
    def locked(self, rollout_id: str) -> Iterator[None]:
        """Hold the rollout's lock (``{id}.lock``) for one read-modify-write of its file.

        The runner and ``abort`` (often another process) both rewrite the file; under
        the lock neither overwrites what the other wrote in between.
        """
        with self._flock(rollout_id, ".lock"):
            yield

    @contextmanager
    def running(self, rollout_id: str, wait: float = 0.0) -> Iterator[None]:
        """Hold the rollout's run lock (``{id}.run``) while a runner drives it.

        The kernel drops the lock with its process (a crash, SIGKILL), so ``resume``
        is never locked out by a dead runner, only by a live one.

        Args:
            wait: seconds to wait for a runner that holds it to end (0: raise at once).

        Raises:
            ModelUpdateError: ``rollout_busy`` (another process runs this rollout, or
                still did after ``wait``).
        """
        busy = "is being run by another process"
        if wait:
            busy = f"is still run by another process after {wait:.0f}s"
        with self._flock(rollout_id, ".run", busy=busy, wait=wait):
            yield

    @contextmanager
    def _flock(
        self, rollout_id: str, suffix: str, busy: str = "", wait: float = 0.0
    ) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``{id}{suffix}`` (released when the file is closed,
        or by the kernel with its process). With ``busy``, a lock held elsewhere for
        ``wait`` seconds more raises ModelUpdateError ``rollout_busy`` ("rollout {id}
        {busy}"); without, it waits (the read-modify-write lock, held for moments)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(rollout_id).with_suffix(suffix), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy else 0))
                    break
                except BlockingIOError as exc:
                    if time.monotonic() >= deadline:
                        why = f"rollout {rollout_id} {busy}"
                        raise ModelUpdateError("rollout_busy", why) from exc
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)

    def save(self, rollout: Rollout) -> None:
        """Write the rollout atomically (old or new file after a crash, never a mix)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data = json.dumps(rollout.to_json(), indent=1, sort_keys=True).encode()
        write_atomic(self.path(rollout.id), data, mode=0o600)

    def refuse_existing(self, rollout_id: str) -> None:
        """Refuse an id already stored: a new rollout never replaces one.

        Raises:
            ValueError: an id that is not a plain file name.
            ModelUpdateError: ``rollout_exists``.
        """
        if self.path(rollout_id).exists():
            raise ModelUpdateError(
                "rollout_exists",
                f"rollout {rollout_id} is already in {self.dir}: 'rollout resume {rollout_id}' "
                "continues it; give another --id for a new rollout",
            )

    def create(self, rollout: Rollout) -> None:
        """Save a new rollout, unless its id was taken meanwhile (two starts at once).

        Raises:
            ModelUpdateError: ``rollout_exists``.
        """
        with self.locked(rollout.id):
            self.refuse_existing(rollout.id)
            self.save(rollout)

    def load(self, rollout_id: str) -> Rollout:
        """Read a rollout back.

        Raises:
            ModelUpdateError: ``no_rollout`` (missing) or ``bad_rollout`` (unreadable).
        """
        path = self.path(rollout_id)
        try:
            doc = json.loads(path.read_bytes())
            return Rollout.from_json(doc)
        except FileNotFoundError as exc:
            raise ModelUpdateError("no_rollout", f"no rollout {rollout_id} in {self.dir}") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelUpdateError("bad_rollout", f"{path}: {exc}") from exc

    def ids(self) -> list[str]:
        """The ids of the stored rollouts, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if _ID.match(p.stem))
