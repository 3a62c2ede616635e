"""Chaos: a network camera drops and returns 100 times; the daemon reconnects every time.

The camera is an MJPEG-over-HTTP server on loopback (tests/support/chaos.py) serving the
demo clip's frames at 15 fps. Each cycle stops the server, cutting the live stream (the
camera's read fails and it enters ``reconnecting``), then starts it again on the same
port; the cycle ends when a result from a frame captured after the restart arrives.
Reopen backoff is 0.05..0.2 s so a hundred cycles take well under a minute.

Counted, per cycle: the camera's "streaming again" log line (one per outage), its
``reconnects`` counter in the retained status (one per reopen attempt, so at least one
per cycle), and the server's stream requests.

A second test covers the silent failure (power or network lost: no FIN, no RST): the
stream just stops and new connections get no answer. Only the read and open timeouts
(``camera.stale_after`` = 1 s) can notice; five such stalls must each end in
``reconnecting`` within about ``stale_after`` and in results again once the camera is back.
"""

from __future__ import annotations

import time

import pytest

from tests.support.broker import MqttSubscriber, wait_until
from tests.support.chaos import (
    DEMO,
    MjpegServer,
    figure,
    jpeg_frames,
    log_count,
    percentile,
    running_daemon,
)

CYCLES = 100
STALLS = 5
STALE_AFTER_S = 1.0
STREAMING_AGAIN = r"camera cam0: streaming again after \d+ failed attempt"

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]


def newest_result_after(sub: MqttSubscriber, topic: str, wall: float) -> bool:
    """True once a result from a frame captured after ``wall`` (epoch s) arrived."""
    return any(m.json()["timestamp"] > wall for m in reversed(sub.on(topic)))


def test_camera_drops_and_returns_a_hundred_times(tmp_path, mqtt_broker):
    server = MjpegServer(jpeg_frames(DEMO / "clip.avi"), fps=15)
    server.start()
    sub = None
    try:
        with running_daemon(
            tmp_path / "daemon",
            mqtt_broker.port,
            server.url,
            DEMO / "color_blobs.tflite",
            DEMO / "labels.txt",
            camera={"reopen_initial": 0.05, "reopen_max": 0.2, "stale_after": 2.0},
            mqtt={"publish_every_frame": True},
        ) as daemon:
            topics = daemon.topics
            sub = MqttSubscriber(
                mqtt_broker.host, mqtt_broker.port, [topics.results, topics.status, topics.stats]
            ).start()
            sub.wait_count(topics.results, 10, timeout=30)
            pid = daemon.pid
            down_s, resume_s = [], []
            for cycle in range(CYCLES):
                mark = len(daemon.log())
                server.stop()
                cut = time.monotonic()
                daemon.wait_log(r"camera cam0: .*; reopening in", timeout=10, after=mark)
                down_s.append(time.monotonic() - cut)
                restarted_wall, restarted = time.time(), time.monotonic()
                server.start()
                daemon.wait_log(STREAMING_AGAIN, timeout=10, after=mark)
                wait_until(
                    lambda t=restarted_wall: newest_result_after(sub, topics.results, t),
                    10,
                    f"results after return {cycle + 1}",
                )
                resume_s.append(time.monotonic() - restarted)
                assert daemon.alive(), f"daemon died in cycle {cycle + 1}"
            log = daemon.log()
            again = log_count(daemon, STREAMING_AGAIN)
            # The retained status is republished within 0.2 s of a camera change; wait
            # for the one that reflects the last cycle (bounded), else judge the latest.
            deadline = time.monotonic() + 5.0
            while True:
                status = sub.on(topics.status)[-1].json()
                cam = status["cameras"]["cam0"]
                settled = cam["state"] == "streaming" and cam["reconnects"] >= CYCLES
                if settled or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            n_stats = len(sub.on(topics.stats))
            worker_restarts = sub.wait_count(topics.stats, n_stats + 1, 5)[-1].json()[
                "worker_restarts"
            ]
            assert daemon.pid == pid and daemon.alive()
            assert daemon.stop(timeout=15) == 0
    finally:
        if sub is not None:
            sub.stop()
        server.stop()

    figure(
        "camera_drop_return",
        cycles=CYCLES,
        streaming_again=again,
        status_reconnects=cam["reconnects"],
        server_streams=server.connections,
        crashes=0,
        worker_restarts=worker_restarts,
        drop_seen_p50_ms=round(percentile(down_s, 0.5) * 1000),
        resume_p50_ms=round(percentile(resume_s, 0.5) * 1000),
        resume_max_ms=round(max(resume_s) * 1000),
    )
    assert "Traceback" not in log, "an exception escaped somewhere in the daemon"
    assert again == CYCLES, f"{again} reconnections logged for {CYCLES} drops"
    assert cam["reconnects"] >= CYCLES
    assert server.connections >= CYCLES + 1
    assert worker_restarts == 0


def test_camera_goes_silent_and_returns(tmp_path, mqtt_broker):
    server = MjpegServer(jpeg_frames(DEMO / "clip.avi", limit=30), fps=15)
    server.start()
    sub = None
    try:
        with running_daemon(
            tmp_path / "daemon",
            mqtt_broker.port,
            server.url,
            DEMO / "color_blobs.tflite",
            DEMO / "labels.txt",
            camera={"reopen_initial": 0.05, "reopen_max": 0.2, "stale_after": STALE_AFTER_S},
            mqtt={"publish_every_frame": True},
        ) as daemon:
            topics = daemon.topics
            sub = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [topics.results]).start()
            sub.wait_count(topics.results, 10, timeout=30)
            noticed_s, resume_s = [], []
            for cycle in range(STALLS):
                mark = len(daemon.log())
                server.stalled.set()
                t0 = time.monotonic()
                match = daemon.wait_log(
                    r"camera cam0: (.*); reopening in", timeout=STALE_AFTER_S * 5, after=mark
                )
                noticed_s.append(time.monotonic() - t0)
                time.sleep(STALE_AFTER_S * 1.5)  # at least one reopen attempt times out
                back_wall, back = time.time(), time.monotonic()
                server.stalled.clear()
                daemon.wait_log(STREAMING_AGAIN, timeout=STALE_AFTER_S * 5, after=mark)
                wait_until(
                    lambda t=back_wall: newest_result_after(sub, topics.results, t),
                    10,
                    f"results after stall {cycle + 1}",
                )
                resume_s.append(time.monotonic() - back)
            again = log_count(daemon, STREAMING_AGAIN)
            assert daemon.alive()
            assert daemon.stop(timeout=15) == 0
    finally:
        if sub is not None:
            sub.stop()
        server.stop()

    figure(
        "camera_silent",
        stalls=STALLS,
        stale_after_cfg=STALE_AFTER_S,
        noticed_max_s=max(noticed_s),
        streaming_again=again,
        resume_max_s=max(resume_s),
        error=repr(match.group(1)),
    )
    assert again == STALLS
    assert max(noticed_s) <= STALE_AFTER_S * 3, noticed_s
    assert max(resume_s) <= STALE_AFTER_S + 3, resume_s
