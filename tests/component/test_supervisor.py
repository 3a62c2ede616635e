"""Tier 2: the supervised inference worker with real processes, models and faults.

The TPU is a test double (tests/support/fake_tpu.py) registered as the ``edgetpu``
backend plugin, which the worker process finds through its path
(tests/support/tpu_plugin.py); aborts and hangs are real: os.abort() and a sleep in
the child's invoke.
"""

import multiprocessing
import os
import threading
import time

import numpy as np
import pytest

from edge_agent.inference.codec import make_codec
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.supervisor import Supervisor
from edge_agent.inference.switching import BackendChanged, SupervisorEvent
from edge_agent.inference.worker import WorkerHandle
from edge_agent.scheduling import yield_to_worker
from tests.support.broker import wait_until
from tests.support.delegate_lib import LOG_ENV, build_delegate, delegate_log
from tests.support.fake_tpu import write_state
from tests.support.paths import fixture_model

TPU_MODEL = str(fixture_model("color_uint8_edgetpu.tflite"))
CPU_MODEL = str(fixture_model("color_uint8.tflite"))
RED = np.zeros((32, 32, 3), np.uint8)
RED[..., 2] = 255  # BGR


@pytest.fixture
def fake_tpu(fake_tpu_state):
    return fake_tpu_state


@pytest.fixture
def events():
    return []


def supervisor(events, path=TPU_MODEL, *, options=None, **kw):
    """A started supervisor of ``path`` (``options``: more ModelOptions fields, such as
    ``cpu_model``), its events into ``events``."""
    labels = str(fixture_model("color_labels.txt"))
    opts = ModelOptions(path=path, labels=labels, num_threads=1, **(options or {}))
    kw.setdefault("deadline", 2.0)
    kw.setdefault("reprobe_initial", 0.2)
    kw.setdefault("reprobe_max", 1.0)
    sup = Supervisor(opts, make_codec, on_event=lambda k, d: events.append((k, d)), **kw)
    sup.start()
    return sup


def run_frames(sup, n, image=RED, timeout=20.0, images=None):
    """Push frames through, two in flight, until n completed; return the completions in
    order. With ``images``, those frames (frame i is ``images[i]``), else n of ``image``."""
    done, submitted, deadline = [], 0, time.monotonic() + timeout
    total = len(images) if images else n
    while len(done) < n and time.monotonic() < deadline:
        sup.apply_pending()
        slot = sup.slot()
        if slot is not None and submitted < total:
            frame = images[submitted] if images else image
            fit = sup.current.codec.preprocessor(frame, slot[1])
            sup.submit(slot[0], (submitted, fit))
            submitted += 1
            continue
        for c in sup.poll(0.1):
            results = c.model.codec.decoder(c.outputs, c.job[1])
            done.append((c.job[0], c.model.worker.info.backend, results))
    return done


def run_until(sup, condition, timeout=20.0):
    """Keep frames flowing until ``condition()`` holds; True if it did in time."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        run_frames(sup, 1)
    return condition()


def test_frames_round_trip_through_shared_memory(events):
    sup = supervisor(events, CPU_MODEL)
    try:
        done = run_frames(sup, 10)
        assert [d[0] for d in done] == list(range(10))
        assert all(d[2][0].label == "red" and d[2][0].score > 0.99 for d in done)
        assert events[0] == (SupervisorEvent.BACKEND, BackendChanged("cpu", CPU_MODEL, None))
    finally:
        sup.stop()


def test_tpu_abort_falls_back_to_cpu_without_losing_frames(fake_tpu, events):
    sup = supervisor(events, reprobe_initial=60)
    try:
        assert sup.current.worker.info.backend == "edgetpu"
        assert [d[1] for d in run_frames(sup, 3)] == ["edgetpu"] * 3
        write_state(fake_tpu, invoke="abort")
        done = run_frames(sup, 6)
        assert [d[0] for d in done] == list(range(6))  # every frame, in order
        assert {d[1] for d in done} == {"cpu"}
        assert sup.restarts == 1 and "SIGABRT" in sup.last_error
        assert (SupervisorEvent.BACKEND, BackendChanged("cpu", CPU_MODEL, "edgetpu")) in events
    finally:
        sup.stop()


def test_hung_worker_is_killed_after_the_deadline(fake_tpu, events):
    sup = supervisor(events, deadline=1.0, reprobe_initial=60)
    try:
        write_state(fake_tpu, invoke="hang")
        t0 = time.monotonic()
        done = run_frames(sup, 2)
        assert [d[0] for d in done] == [0, 1] and {d[1] for d in done} == {"cpu"}
        assert "hung" in sup.last_error
        assert time.monotonic() - t0 < 10
    finally:
        sup.stop()


def test_a_frame_that_kills_the_last_backend_is_dropped_not_resubmitted_for_ever(fake_tpu, events):
    # Real workers with the CPU backend left out: the TPU is the last backend. One frame
    # kills the runtime every time it runs: after 2 deaths it is dropped and counted, and
    # the frames around it all come back.
    write_state(fake_tpu, invoke="abort_uniform", invoke_after=1)  # not the warm-up
    black = np.zeros_like(RED)

    def tpu_only(request, *, skip=(), **kw):
        return WorkerHandle(request, skip=(*skip, "cpu"), **kw)

    sup = supervisor(events, reprobe_initial=60, worker_factory=tpu_only)
    try:
        assert not sup.current.worker.info.has_fallback
        images = [RED] * 3 + [black] + [RED] * 4
        done = run_frames(sup, 7, images=images, timeout=30.0)
        assert [d[0] for d in done] == [0, 1, 2, 4, 5, 6, 7]  # frame 3 dropped, in order
        assert {d[1] for d in done} == {"edgetpu"}
        assert sup.restarts == 2 and sup.invoke_errors == 1
        assert "killed 2 workers" in sup.last_error and "SIGABRT" in sup.last_error
        assert sup.current.worker.alive()
        assert [d[0] for d in run_frames(sup, 2)] == [0, 1]  # and it goes on
    finally:
        sup.stop()


def test_tpu_vanishes_then_comes_back_and_is_readopted(fake_tpu, events):
    sup = supervisor(events, reprobe_initial=0.2, reprobe_max=0.4)
    try:
        assert sup.current.worker.info.backend == "edgetpu"
        write_state(fake_tpu, devices=[])  # unplugged: invoke fails, probes find nothing
        done = run_frames(sup, 3)
        assert {d[1] for d in done} == {"cpu"}
        # Several re-probes run (counted) and fail: the TPU is still gone.
        probes = sup.reprobes
        assert run_until(sup, lambda: sup.reprobes >= probes + 2)
        assert sup.current.worker.info.backend == "cpu"
        write_state(fake_tpu, devices=["usb"])  # plugged back in
        assert run_until(sup, lambda: sup.current.worker.info.backend == "edgetpu")
        assert [d[1] for d in run_frames(sup, 2)] == ["edgetpu"] * 2
        backends = [d.backend for kind, d in events if kind is SupervisorEvent.BACKEND]
        assert backends == ["edgetpu", "cpu", "edgetpu"]
    finally:
        sup.stop()


def test_hot_swap_between_frames_and_rollback(events):
    sup = supervisor(events, CPU_MODEL)
    try:
        run_frames(sup, 2)
        new_opts = ModelOptions(
            path=str(fixture_model("color_float.tflite")),
            labels=str(fixture_model("color_labels.txt")),
            num_threads=1,
        )
        gen = sup.prepare(new_opts, {"name": "color", "version": "2"})
        switched = []
        ticket = sup.switches.switch_to(gen, switched.append)
        done = run_frames(sup, 4)
        assert switched == [True] and ticket.adopted
        assert sup.current.options.path.endswith("color_float.tflite")
        assert sup.current.meta["version"] == "2"
        assert all(d[2][0].label == "red" for d in done)
        assert sup.switches.rollback() is not None
        run_frames(sup, 2)
        assert sup.current.options.path == CPU_MODEL
        assert sup.switches.rollback() is None  # nothing older kept
    finally:
        sup.stop()


def test_the_worker_runs_other_while_the_thread_that_started_it_runs_batch(events):
    # A worker process inherits the policy of whatever started it (here a process spawned
    # from a SCHED_BATCH thread); it takes SCHED_OTHER back, so the frame path's threads
    # (SCHED_BATCH, edge_agent/scheduling.py) never preempt it.
    found = {}

    def start():
        yield_to_worker()
        sup = supervisor(events, CPU_MODEL, context=multiprocessing.get_context("spawn"))
        found["sup"] = sup
        found["starter"] = os.sched_getscheduler(0)

    t = threading.Thread(target=start)
    t.start()
    t.join(60)
    sup = found["sup"]
    try:
        assert found["starter"] == os.SCHED_BATCH
        assert os.sched_getscheduler(sup.current.worker.pid) == os.SCHED_OTHER
        assert run_frames(sup, 2)[1][2][0].label == "red"
    finally:
        sup.stop()


def test_frames_in_flight_at_a_fallback_to_a_twin_of_another_layout_never_run_on_zeros(
    fake_tpu, events
):
    # The CPU twin (model.cpu_model) takes float32 where the TPU build takes uint8: the
    # fallback worker gets new shared slots. The frames in flight were preprocessed into
    # the old ones: each is run again from its own pixels or dropped and counted, never
    # run on the new slots' zeros and published as that frame's results.
    options = {"cpu_model": str(fixture_model("color_float.tflite"))}
    sup = supervisor(events, options=options, deadline=2.0, reprobe_initial=60, reprobe_max=60)
    try:
        assert [d[1] for d in run_frames(sup, 2)] == ["edgetpu"] * 2
        write_state(fake_tpu, invoke="abort")
        done = run_frames(sup, 6)
        assert sup.restarts == 1 and sup.current.worker.info.backend == "cpu"
        assert all(d[2] and d[2][0].label == "red" for d in done), done
        ids = [d[0] for d in done]
        assert ids == sorted(ids) and ids[-1] == 5
        assert len(ids) + sup.invoke_errors == 6  # every frame back, or dropped and counted
    finally:
        sup.stop()


def test_a_tpu_model_the_cpu_cannot_run_goes_back_to_the_tpu_after_a_usb_error(fake_tpu, events):
    # An Edge TPU model whose CPU twin cannot load (here model.cpu_model is not a model;
    # as for an _edgetpu file without a twin). One failed invoke (a USB transfer error)
    # sends the replacement to the CPU, which cannot load it: the retries must try the
    # TPU again, not stay without a worker for ever once the TPU works.
    options = {"cpu_model": str(fixture_model("not_a_model.tflite"))}
    sup = supervisor(events, options=options, deadline=2.0, reprobe_initial=0.2, reprobe_max=1.0)
    try:
        assert [d[1] for d in run_frames(sup, 2)] == ["edgetpu"] * 2
        write_state(fake_tpu, invoke="raise")
        run_frames(sup, 1, timeout=3.0)
        assert sup.restarts == 1 and "not a TFLite model" in sup.last_error
        write_state(fake_tpu, invoke="ok")  # the transfer error was a one-off
        done = run_frames(sup, 4, timeout=15.0)
        assert len(done) >= 4 and {d[1] for d in done} == {"edgetpu"}
        assert all(d[2][0].label == "red" for d in done)
    finally:
        sup.stop()


def test_stop_ends_a_reprobe_whose_tpu_load_hangs(fake_tpu, events, tmp_path, monkeypatch):
    # The TPU failed, so the CPU runs and the TPU is re-probed; the re-probe's load hangs
    # in the delegate (a half-plugged USB stick: the real load_delegate path, with the
    # test library in its "hang" mode). stop() must end it, thread and process, at once,
    # not when load_timeout (here 60 s) runs out.
    log = tmp_path / "delegate.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    opts = ModelOptions(
        path=TPU_MODEL,
        labels=str(fixture_model("color_labels.txt")),
        num_threads=1,
        edgetpu_library=str(build_delegate(tmp_path, "hang")),
    )
    sup = Supervisor(
        opts, make_codec, deadline=2.0, reprobe_initial=0.2, reprobe_max=1.0, load_timeout=60,
        on_event=lambda k, d: events.append((k, d)),
    )  # fmt: skip
    sup.start()  # the fake delegate: no library loaded yet
    try:
        write_state(fake_tpu, invoke="abort")
        assert {d[1] for d in run_frames(sup, 2)} == {"cpu"}
        write_state(fake_tpu, delegate="real")  # the re-probe loads the library: it hangs
        assert run_until(sup, lambda: "create mode=hang" in delegate_log(log))
    finally:
        t0 = time.monotonic()
        sup.stop(timeout=3.0)
        stopped = time.monotonic() - t0
    threads = [t for t in threading.enumerate() if t.name == "tpu-reprobe" and t.is_alive()]
    children = multiprocessing.active_children()
    assert not threads and not children and stopped < 5.0, (threads, children, stopped)


def test_a_tpu_plugged_in_after_the_start_is_adopted(fake_tpu, events):
    # The box started without its USB accelerator (not plugged in yet, or it enumerated
    # late): the CPU twin runs. Plugged in, it is found by the re-probe and adopted.
    write_state(fake_tpu, devices=[])
    sup = supervisor(events, reprobe_initial=0.2, reprobe_max=0.4)
    try:
        assert sup.current.worker.info.backend == "cpu"
        write_state(fake_tpu, devices=["usb"])
        assert run_until(sup, lambda: sup.current.worker.info.backend == "edgetpu")
        assert [d[1] for d in run_frames(sup, 2)] == ["edgetpu"] * 2
    finally:
        sup.stop()


def test_a_model_without_an_edgetpu_build_is_not_reprobed(fake_tpu, events):
    # The TPU is there but the model has no _edgetpu twin: nothing a re-probe could find.
    sup = supervisor(events, CPU_MODEL.replace("color_uint8", "color_int8"), reprobe_initial=0.1)
    try:
        assert sup.current.worker.info.backend == "cpu"
        run_frames(sup, 10)
        assert sup.reprobes == 0 and not sup._reprobe.claim()
    finally:
        sup.stop()


def test_a_frame_done_just_before_a_fallback_to_another_layout_is_decoded_intact(fake_tpu, events):
    # Two frames in flight on the TPU: the first completes, the worker dies on the second.
    # Both messages wait in the pipe when poll() reads them: the fallback to a CPU twin of
    # another layout replaces the shared slots while the first frame's Completion still
    # points into them. Its outputs must stay readable (not unmapped memory: a segfault).
    options = {"cpu_model": str(fixture_model("color_float.tflite"))}
    sup = supervisor(events, options=options, deadline=2.0, reprobe_initial=60, reprobe_max=60)
    try:
        write_state(fake_tpu, invoke="abort", invoke_after=2)  # the warm-up, frame 0: fine
        worker = sup.current.worker
        for job in range(2):
            slot = sup.slot()
            fit = sup.current.codec.preprocessor(RED, slot[1])
            sup.submit(slot[0], (job, fit))
        assert wait_until(lambda: not worker.alive(), 10, "the worker to die on frame 1")
        done = sup.poll(0.1)
        assert [c.job[0] for c in done] == [0] and sup.current.worker.info.backend == "cpu"
        results = done[0].model.codec.decoder(done[0].outputs, done[0].job[1])
        assert results and results[0].label == "red"
    finally:
        sup.stop()
