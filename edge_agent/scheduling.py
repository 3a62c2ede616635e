"""The frame path's threads give way to the inference worker (Linux scheduling policy).

The worker hands each result back with one write, then reads the next frame and starts
its invoke. That write wakes the pipeline thread, and a woken thread may preempt the
writer on its core: the worker then waits while the pipeline decodes, publishes and
preprocesses the next frame, and the accelerator idles. The camera and MQTT threads,
woken once per frame too, do the same. Measured with the simulated 2.5 ms Edge TPU, one
camera at ``decode_scale = 2``: the worker's write of a result took 0.5 ms on 40 % of
frames (0.02 otherwise), and the pipeline ran at 346-350 fps against 377 for the worker
alone (docs/BENCHMARKS.md).

Those threads run under ``SCHED_BATCH``: the same fair share of the CPU as any other
thread (not ``SCHED_IDLE``), but a thread woken under it never preempts the one running,
so the worker keeps its core until it blocks in the next invoke. Any user may choose it
for its own threads. The worker sets ``SCHED_OTHER`` for itself whatever it inherited.
"""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)
_refusal_told = threading.Lock()  # taken for good by the first thread to warn of a refusal


def _set_policy(policy_name: str) -> bool:
    """The calling thread's policy (Linux: per thread); False where it is not available."""
    policy = getattr(os, policy_name, None)
    setter = getattr(os, "sched_setscheduler", None)
    if policy is None or setter is None:
        return False
    try:
        setter(0, policy, os.sched_param(0))
    except OSError as exc:  # a seccomp filter or a container may refuse it
        # Once: each thread would say the same (threads start together: the lock, not a flag).
        level = logging.WARNING if _refusal_told.acquire(blocking=False) else logging.DEBUG
        logger.log(
            level,
            "scheduling policy %s refused (%s): the camera, pipeline and MQTT threads may "
            "preempt the inference worker (a systemd SystemCallFilter must allow "
            "sched_setscheduler)",
            policy_name,
            exc,
        )
        return False
    return True


def yield_to_worker() -> bool:
    """Mark the calling thread ``SCHED_BATCH`` (call it first in a frame-path thread).

    Returns:
        Whether the policy was set (False off Linux, or where it is refused).
    """
    return _set_policy("SCHED_BATCH")


def worker_priority() -> bool:
    """Mark the calling thread ``SCHED_OTHER``: the worker's, whatever it inherited.

    Returns:
        Whether the policy was set.
    """
    return _set_policy("SCHED_OTHER")
