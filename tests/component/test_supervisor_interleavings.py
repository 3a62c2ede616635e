"""The real Supervisor under 1,000 seeded interleavings of its concurrent requesters.

Each interleaving is a random sequence of what the pipeline thread, the update thread
and the re-probe thread do (frames, update switch requests and their timeouts, health
verdicts, manual rollbacks, re-probe starts and offers) plus worker deaths and the TPU
coming and going. Workers are cheap in-process doubles; the Supervisor, its
Switchboard and its re-probe logic are the real ones, driven from one thread so that
every interleaving is reproducible from its seed. The update side follows
daemon/model_updates.py: a swap that times out withdraws its request, a failed health
check switches back, and the store (a small model of ModelStore) rolls back.

Invariants: no interleaving adopts a stopped worker, none serves from a stopped one,
and each ends serving the store's active release.
"""

from __future__ import annotations

import random
import time
from types import SimpleNamespace

import numpy as np

from edge_agent.daemon.model_updates import switched
from edge_agent.errors import WorkerError
from edge_agent.inference import supervisor as supervisor_module
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.supervisor import Supervisor
from edge_agent.inference.switching import SupervisorEvent, SwitchState
from edge_agent.inference.tensors import QuantParams, TensorSpec
from edge_agent.inference.worker import Done, WorkerInfo

INTERLEAVINGS = 1000
STEPS = 40
SPEC = TensorSpec(0, "x", (1, 4), np.dtype(np.uint8), QuantParams(0.0, 0))


class World:
    """What the doubles share: whether the TPU is plugged in, and what went wrong."""

    def __init__(self) -> None:
        self.tpu = True
        self.loadable = True  # False: every worker fails to load (disk trouble, say)
        self.violations: list[str] = []
        self.pids = 0


class FakeWorker:
    """A worker that loads and invokes instantly, and can die or be stopped."""

    def __init__(self, request, *, skip=(), warmup=True, context=None, world: World):
        self.request, self.skip, self._world = request, tuple(skip), world
        world.pids += 1
        self.pid = world.pids
        self.info: WorkerInfo | None = None
        self.stopped = self.dead = False
        self._queue: list[Done] = []

    def start(self, timeout: float, cancel=None) -> WorkerInfo:
        if not self._world.loadable:
            raise WorkerError(f"worker {self.pid}: the model does not load")
        tpu = self._world.tpu and "edgetpu" not in self.skip
        backend, rank = ("edgetpu", 0) if tpu else ("cpu", 1)
        self.info = WorkerInfo(
            self.pid, backend, rank, tpu, self.request.model_path, "fake", SPEC, (SPEC,), (), 0.0
        )
        return self.info

    def attach(self, buffers) -> None:
        if self.stopped:
            self._world.violations.append(f"adopted stopped worker {self.pid}")

    def submit(self, seq: int, slot: int) -> None:
        if not self.alive():
            raise WorkerError(f"worker {self.pid} died")
        self._queue.append(Done(seq, slot, 1.0))

    def receive(self, timeout: float):
        if not self.alive():
            raise WorkerError(f"worker {self.pid} died")
        return self._queue.pop(0) if self._queue else None

    def alive(self) -> bool:
        return not (self.stopped or self.dead)

    def stop(self, timeout: float = 2.0) -> None:
        self.stopped = True

    def kill(self) -> None:
        self.dead = True


def options(version: int) -> ModelOptions:
    return ModelOptions(path=f"models/v{version}.tflite", num_threads=1)


def meta(version: int) -> dict[str, str]:
    return {"name": "m", "version": str(version)}


def codec(info, opts):
    return SimpleNamespace(decoder=SimpleNamespace(settings=None, labels_filter=None))


class Interleaving:
    """One seeded run: the supervisor, the store model, and the requesters' states."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.world = World()
        self.events: list[tuple] = []
        self.sup = Supervisor(
            options(1),
            codec,
            meta=meta(1),
            reprobe_initial=1e6,  # re-probes are driven by the steps, not by the clock
            reprobe_max=1e6,
            context=object(),
            worker_factory=lambda *a, **kw: FakeWorker(*a, world=self.world, **kw),
            on_event=lambda event, payload: self.events.append((event, payload)),
        )
        self.sup.start()
        self.active, self.history = 1, [1]  # the store: active release, installed ones
        self.flow: SimpleNamespace | None = None  # the update thread's swap in progress
        self.probe: tuple | None = None  # the re-probe thread's (basis, candidate)

    # ---- the pipeline thread
    def frame(self) -> None:
        sup = self.sup
        sup.apply_pending()
        slot = sup.slot()
        if slot is not None:
            sup.submit(slot[0], None)
        sup.poll(0.0)
        current = sup.current
        if current is not None and current.worker.stopped:
            self.world.violations.append(f"serving from stopped worker {current.worker.pid}")

    # ---- the update thread (model_updates.UpdateService.swap and the installer)
    def update(self) -> None:
        if self.flow is None:
            version = max(self.history) + 1
            self.history.append(version)
            prior, self.active = self.active, version  # store.activate(trial=True)
            self._request(version, prior, manual=False)

    def manual_rollback(self) -> None:
        older = [v for v in self.history if v < self.active]
        if self.flow is None and older:
            self._request(older[-1], self.active, manual=True)  # swap first, then the store

    def _request(self, version: int, prior: int, manual: bool) -> None:
        model = self.sup.prepare(options(version), meta(version))
        ticket = self.sup.switches.switch_to(model)
        self.flow = SimpleNamespace(ticket=ticket, version=version, prior=prior, manual=manual)
        self.flow.switched = None  # None until the requester wakes

    def wake(self, timed_out: bool) -> None:
        """The update thread wakes: its ticket resolved, or its wait timed out."""
        flow = self.flow
        if flow is None or flow.switched is not None:
            return
        if not (flow.ticket.wait(0) or timed_out):
            return
        flow.switched = switched(self.sup.switches, flow.ticket, 0.0)  # the swap's own wait
        if not flow.switched:  # swap_failed: the installer rolls the store back
            self.active = flow.prior
            self.flow = None

    def verdict(self, healthy: bool) -> None:
        flow = self.flow
        if flow is None or not flow.switched:
            return
        if healthy:
            self.sup.switches.commit()
            self.active = flow.version  # an update stays; a manual rollback now commits
        else:
            self.sup.switches.rollback()  # never cancelled; the store goes back
            self.active = flow.prior
        self.flow = None

    # ---- the re-probe thread
    def probe_start(self) -> None:
        if self.probe is None and self.sup.current is not None:
            basis = self.sup.current
            self.probe = (basis, self.sup.prepare(basis.options, basis.meta, ()))

    def probe_offer(self) -> None:
        if self.probe is not None:
            basis, cand = self.probe
            self.probe = None
            self.sup.offer_reprobe(basis, cand, "probe")

    # ---- faults
    def worker_death(self) -> None:
        sup = self.sup
        pending = sup.switches.pending
        candidates = [sup.current, sup.switches.previous, pending and pending.model]
        candidates.append(self.probe and self.probe[1])
        alive = [m.worker for m in candidates if m is not None and m.worker.alive()]
        if alive:
            self.rng.choice(alive).kill()

    def tpu(self) -> None:
        self.world.tpu = not self.world.tpu

    def run(self) -> list[str]:
        steps = [
            (self.frame, 6),
            (self.update, 2),
            (self.manual_rollback, 1),
            (lambda: self.wake(timed_out=False), 2),
            (lambda: self.wake(timed_out=True), 2),
            (lambda: self.verdict(True), 1),
            (lambda: self.verdict(False), 1),
            (self.probe_start, 2),
            (self.probe_offer, 2),
            (self.worker_death, 2),
            (self.tpu, 1),
        ]
        actions, weights = zip(*steps)
        try:
            for action in self.rng.choices(actions, weights, k=STEPS):
                action()
            self.settle()
            serving = self.sup.current.meta["version"]
            if serving != str(self.active):
                self.world.violations.append(f"serving v{serving}, store active v{self.active}")
        finally:
            self.sup.stop()
        return self.world.violations

    def settle(self) -> None:
        """Let every requester finish: frames run, the update thread wakes or times out."""
        self.probe_offer()
        for _ in range(5):
            self.frame()
        self.wake(timed_out=True)
        self.verdict(self.rng.random() < 0.5)
        for _ in range(5):
            self.frame()


def test_no_interleaving_adopts_a_stopped_worker_or_serves_a_rolled_back_release():
    failures = {}
    for seed in range(INTERLEAVINGS):
        violations = Interleaving(seed).run()
        if violations:
            failures[seed] = violations
    assert not failures, f"{len(failures)}/{INTERLEAVINGS} interleavings failed: " + "; ".join(
        f"seed {seed}: {v}" for seed, v in list(failures.items())[:5]
    )


def test_a_reprobe_never_displaces_a_pending_update_and_a_cancelled_switch_is_never_adopted():
    run = Interleaving(0)
    try:
        run.world.tpu = False
        run.sup.current.worker.kill()
        run.frame()  # restarted on the CPU
        assert run.sup.current.worker.info.backend == "cpu"
        run.world.tpu = True
        run.update()  # v2, pending
        ticket = run.flow.ticket
        run.probe_start()
        basis, cand = run.probe
        run.probe_offer()  # the TPU is back, but the update outranks the re-probe
        assert cand.worker.stopped and run.flow.ticket.state is SwitchState.PENDING
        run.wake(timed_out=True)  # the update gives up before the pipeline adopted it
        assert run.active == 1 and run.sup.switches.pending is None
        assert ticket.state is SwitchState.CANCELLED and ticket.model.worker.stopped
        for _ in range(3):
            run.frame()
        assert run.sup.current.meta["version"] == "1" and not run.world.violations
    finally:
        run.sup.stop()


def test_a_rollback_whose_fresh_worker_starts_late_is_still_announced(monkeypatch):
    # The pipeline resets its motion references and last results only on a switch
    # apply_pending() returns; a rollback completed later by poll() must be one too.
    run = Interleaving(0)

    def models():
        return [p.version for e, p in run.events if e is SupervisorEvent.MODEL]

    try:
        run.sup.current.worker.kill()  # a plain crash and restart is no switch
        run.frame()
        assert run.sup.current.worker.alive() and run.sup.apply_pending() is None
        assert models() == []
        run.update()
        run.frame()
        run.wake(timed_out=False)
        assert run.flow.switched and run.sup.current.meta["version"] == "2"
        run.verdict(False)  # unhealthy: back to v1, whose warm worker then dies
        run.sup.switches.pending.model.worker.kill()
        run.world.loadable = False
        v2 = run.sup.current
        assert run.sup.apply_pending() is None  # v1's fresh worker cannot load yet
        assert run.sup.slot() is None and run.active == 1
        # Status and re-probes read current: it names v1, being restarted, not v2.
        assert run.sup.current.meta["version"] == "1" and not v2.worker.alive()
        assert models() == ["2"]  # v1 not announced while it does not run
        run.world.loadable = True
        later = time.monotonic() + 3600.0  # past the restart backoff
        monkeypatch.setattr(supervisor_module, "time", SimpleNamespace(monotonic=lambda: later))
        run.sup.poll(0.0)  # restarts v1
        assert run.sup.current.meta["version"] == "1" and run.sup.current.worker.alive()
        assert models() == ["2"]
        announced = run.sup.apply_pending()
        assert announced is run.sup.current
        assert models() == ["2", "1"]
        assert run.sup.apply_pending() is None and models() == ["2", "1"]  # announced once
    finally:
        run.sup.stop()
