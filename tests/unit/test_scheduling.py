"""The frame path's threads give way to the inference worker (SCHED_BATCH), per thread."""

import os
import threading

import pytest

from edge_agent.scheduling import worker_priority, yield_to_worker

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_BATCH"), reason="scheduling policies are Linux's"
)


def in_thread(fn):
    """Run ``fn`` in a new thread; return what it returned."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(10)
    return out[0]


def test_a_frame_path_thread_runs_batch_and_only_that_thread():
    def body():
        assert yield_to_worker()
        return os.sched_getscheduler(0), threading.get_native_id()

    policy, tid = in_thread(body)
    assert policy == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's thread is untouched
    assert tid != threading.get_native_id()


def test_threads_it_starts_inherit_it_and_the_worker_takes_other_back():
    def body():
        yield_to_worker()
        inherited = in_thread(lambda: os.sched_getscheduler(0))
        assert worker_priority()
        return inherited, os.sched_getscheduler(0)

    assert in_thread(body) == (os.SCHED_BATCH, os.SCHED_OTHER)


def test_a_refusal_is_reported_once_not_raised(monkeypatch, caplog):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    monkeypatch.setattr("edge_agent.scheduling._refusal_told", threading.Lock())
    together = threading.Barrier(8)  # threads that start at once refuse at once

    def refused():
        together.wait(10)
        return yield_to_worker()

    with caplog.at_level("DEBUG", logger="edge_agent.scheduling"):
        threads = [threading.Thread(target=refused) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert in_thread(yield_to_worker) is False
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 9
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "SCHED_BATCH refused" in warnings[0].getMessage()
    assert "SystemCallFilter" in warnings[0].getMessage()
    monkeypatch.delattr(os, "SCHED_BATCH")
    assert in_thread(yield_to_worker) is False


def test_the_pipeline_thread_runs_batch():
    from tests.unit.test_pipeline_frames import PERSON, FakeCamera, FakeSupervisor, gated_pipeline

    policies = []
    stop = threading.Event()

    def publish(payload):
        policies.append(os.sched_getscheduler(0))  # called on the pipeline's thread
        stop.set()

    pipeline = gated_pipeline([FakeCamera([PERSON] * 3)], FakeSupervisor(set()), publish)
    t = threading.Thread(target=pipeline.run, args=(stop,))
    t.start()
    t.join(10)
    assert not t.is_alive() and policies and set(policies) == {os.SCHED_BATCH}
