"""Chaos: the daemon starts with a read-only or a full state directory.

The state directory (spool, loss ledger, model store) is a 16 MiB tmpfs mounted for
the test (skipped when mounting is not possible, i.e. not root), either remounted
read-only or filled to the last byte before the daemon starts. Detection must go on:
results are delivered live (not durably), and the retained status and the stats say
why in ``storage_error``. When the storage comes back (remounted read-write, space
freed) the publisher notices by itself: the spool re-opens and the stats' error clears
(model updates, off since the store could not be created, need a restart).
"""

from __future__ import annotations

import contextlib
import subprocess
import time

import pytest

from tests.support.broker import MOSQUITTO, MqttSubscriber, wait_until
from tests.support.chaos import DEMO, figure, fill_disk, running_daemon, tmpfs

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(120),
    pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (apt-get install mosquitto)"),
]

FPS = 15


def remount(path, mode: str) -> None:
    """Remount the tmpfs at ``path`` ``ro`` or ``rw``."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, timeout=10)


def status_where(sub, topic, predicate, since: float) -> dict:
    """The first retained-status document published after ``since`` matching ``predicate``."""
    return sub.wait_for(
        topic, lambda m: m.json()["started"] >= since and predicate(m.json()), timeout=30
    ).json()


@pytest.mark.parametrize("fault", ["read_only", "full"])
def test_unwritable_state_dir_keeps_detection_and_says_so(tmp_path, mqtt_broker_factory, fault):
    broker = mqtt_broker_factory("mosquitto")
    workdir = tmp_path / "daemon"
    state = workdir / "state"
    with contextlib.ExitStack() as stack:
        stack.enter_context(tmpfs(state, "16m"))
        if fault == "read_only":
            remount(state, "ro")
        else:
            fill_disk(state / "filler")
        started = time.time() - 1
        sub = MqttSubscriber(
            broker.host, broker.port, [f"e2e/e2e-dev/{t}" for t in ("results", "status", "stats")]
        ).start()
        stack.callback(sub.stop)
        daemon = stack.enter_context(
            running_daemon(
                workdir,
                broker.port,
                DEMO / "clip.avi",
                DEMO / "color_blobs.tflite",
                DEMO / "labels.txt",
                mqtt={"publish_every_frame": True},
                stats={"interval": 1.0},
            )
        )
        topics = daemon.topics
        sub.wait_count(topics.results, 2 * FPS, timeout=30)
        broken = status_where(
            sub, topics.status, lambda s: s["state"] == "running" and s["storage_error"], started
        )
        assert daemon.alive()
        # The storage comes back: the daemon notices without a restart.
        if fault == "read_only":
            remount(state, "rw")
        else:
            (state / "filler").unlink()
        fixed_wall = time.time()
        mark = len(sub.on(topics.stats))
        wait_until(
            lambda: any(not m.json()["mqtt"]["storage_error"] for m in sub.on(topics.stats)[mark:]),
            30,
            "storage_error cleared",
        )
        recovered_s = time.time() - fixed_wall
        results = len(sub.on(topics.results))
        assert daemon.stop(timeout=15) == 0
        log = daemon.log()
    figure(
        f"storage_{fault}",
        results_delivered=results,
        recovered_s=recovered_s,
        storage_error=repr(broken["storage_error"]),
    )
    assert "results are not durable" in broken["storage_error"]
    expected = "Read-only file system" if fault == "read_only" else "disk full"
    assert expected in broken["storage_error"]
    assert broken["last_error"] == broken["storage_error"] or broken["last_error"]
    assert "cannot start" not in log
