"""Chaos: the inference worker aborts mid-invoke 20 times; the daemon survives every one.

There is no Edge TPU here: the fake (tests/support/fake_tpu.py, the daemon's ``edgetpu``
backend plugin through its PYTHONPATH) runs the model's
CPU twin as "the TPU" and obeys a state file the test rewrites while the daemon runs.
``invoke="abort"`` makes the worker call ``os.abort()`` inside invoke, as libedgetpu does
on a USB transfer error. Each cycle:

1. abort: the worker dies of SIGABRT; the supervisor restarts it on the CPU and
   resubmits the in-flight frames; results continue with ``backend == "cpu"`` and the
   retained status reports the CPU backend and the SIGABRT;
2. heal: the state goes back to ``ok``; the re-probe (``reprobe_initial`` 0.2 s,
   ``reprobe_max`` 0.5 s) loads the model on the TPU again and the pipeline switches back
   between frames: results with ``backend == "edgetpu"``, status says so too.

Afterwards: ``worker_restarts`` in stats equals the number of aborts, the results
switched backend exactly twice per cycle, and their frame ids never went backwards.
"""

from __future__ import annotations

import time

import pytest

from tests.support.broker import MqttSubscriber, wait_until
from tests.support.chaos import DEMO, figure, first_occurrences, percentile, running_daemon
from tests.support.fake_tpu import write_state
from tests.support.paths import fixture_model
from tests.support.tpu_plugin import fake_tpu_env

ABORTS = 20

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]


def backend_after(sub: MqttSubscriber, topic: str, start: int, backend: str) -> bool:
    """True once a message after index ``start`` on topic has this backend."""
    return any(m.json()["backend"] == backend for m in sub.on(topic)[start:])


def transitions(backends: list[str]) -> list[tuple[str, str]]:
    """Consecutive (from, to) pairs where the backend changed."""
    return [(a, b) for a, b in zip(backends, backends[1:]) if a != b]


def test_twenty_worker_aborts(tmp_path, mqtt_broker):
    state = tmp_path / "tpu.json"
    write_state(state, devices=["usb"], invoke="ok")
    tpu_model = fixture_model("color_uint8_edgetpu.tflite")
    sub = None
    try:
        with running_daemon(
            tmp_path / "daemon",
            mqtt_broker.port,
            DEMO / "clip.avi",
            tpu_model,
            fixture_model("color_labels.txt"),
            env=fake_tpu_env(state),
            inference={"reprobe_initial": 0.2, "reprobe_max": 0.5},
            mqtt={"publish_every_frame": True},
        ) as daemon:
            topics = daemon.topics
            sub = MqttSubscriber(
                mqtt_broker.host, mqtt_broker.port, [topics.results, topics.status, topics.stats]
            ).start()
            sub.wait_count(topics.results, 5, timeout=30)
            wait_until(lambda: backend_after(sub, topics.status, 0, "edgetpu"), 10, "status tpu")
            pid = daemon.pid
            to_cpu_s, back_s = [], []
            for cycle in range(1, ABORTS + 1):
                n_res, n_status = len(sub.on(topics.results)), len(sub.on(topics.status))
                write_state(state, devices=["usb"], invoke="abort")
                t0 = time.monotonic()
                wait_until(
                    lambda n=n_res: backend_after(sub, topics.results, n, "cpu"),
                    15,
                    f"CPU results after abort {cycle}",
                )
                to_cpu_s.append(time.monotonic() - t0)
                wait_until(
                    lambda n=n_status: backend_after(sub, topics.status, n, "cpu"),
                    10,
                    f"status on cpu after abort {cycle}",
                )
                n_res, n_status = len(sub.on(topics.results)), len(sub.on(topics.status))
                write_state(state, devices=["usb"], invoke="ok")
                t0 = time.monotonic()
                wait_until(
                    lambda n=n_res: backend_after(sub, topics.results, n, "edgetpu"),
                    15,
                    f"TPU results after heal {cycle}",
                )
                back_s.append(time.monotonic() - t0)
                wait_until(
                    lambda n=n_status: backend_after(sub, topics.status, n, "edgetpu"),
                    10,
                    f"status on edgetpu after heal {cycle}",
                )
                assert daemon.alive() and daemon.pid == pid, f"daemon died in cycle {cycle}"
            stats = sub.wait_for(
                topics.stats, lambda m: m.json()["worker_restarts"] >= ABORTS, timeout=10
            ).json()
            n_res = len(sub.on(topics.results))
            sub.wait_count(topics.results, n_res + 15, timeout=10)  # still producing
            log = daemon.log()
            assert daemon.stop(timeout=15) == 0
    finally:
        if sub is not None:
            sub.stop()

    got = [m.json() for m in sub.on(topics.results)]
    ids = [r["frame_id"] for r in got]
    flips = transitions([r["backend"] for r in got])
    statuses = [m.json() for m in sub.on(topics.status)]
    status_flips = transitions([s["backend"] for s in statuses if s["backend"]])
    aborted = [s["last_error"] for s in statuses if s["backend"] == "cpu"]
    figure(
        "worker_aborts",
        aborts=ABORTS,
        worker_restarts=stats["worker_restarts"],
        result_backend_flips=len(flips),
        status_backend_flips=len(status_flips),
        daemon_exits=0,
        cpu_fallback_p50_s=percentile(to_cpu_s, 0.5),
        cpu_fallback_max_s=max(to_cpu_s),
        tpu_back_p50_s=percentile(back_s, 0.5),
        tpu_back_max_s=max(back_s),
        camera_dropped=stats["dropped_frames"],
    )
    assert stats["worker_restarts"] == ABORTS
    assert flips == [("edgetpu", "cpu"), ("cpu", "edgetpu")] * ABORTS
    assert status_flips == [("edgetpu", "cpu"), ("cpu", "edgetpu")] * ABORTS
    assert all("SIGABRT" in e for e in aborted), aborted
    assert ids == first_occurrences(ids) == sorted(ids), "frames repeated or out of order"
    assert "Traceback" not in log
