"""Tier 1: the bench's CPU marks count the publisher's work for the measured frames even
when it comes after them (a still frame's result waits for the next batch)."""

from __future__ import annotations

import threading
import time

from edge_agent.tools.bench.recorder import PUBLISHER, Recorder, Tracker

BURN_S = 0.05  # CPU the publisher spends after the last frame


def test_the_publishers_work_after_the_last_frame_is_counted_at_close():
    tracker = Tracker(frames=3, warmup=1, stats=Recorder(8), pids={})
    go, burnt, leave = threading.Event(), threading.Event(), threading.Event()

    def publisher() -> None:
        go.wait(10.0)
        start = time.thread_time()
        while time.thread_time() - start < BURN_S:  # the held batch, sent late
            pass
        burnt.set()
        leave.wait(10.0)

    thread = threading.Thread(target=publisher, name=PUBLISHER)
    thread.start()
    try:
        for _ in range(3):
            tracker.progress()
        assert tracker.finished.is_set()
        at_last_frame = tracker.thread_ms_per_frame()[PUBLISHER]
        go.set()
        assert burnt.wait(10.0)
        tracker.close()
        at_close = tracker.thread_ms_per_frame()
    finally:
        go.set()
        leave.set()
        thread.join(10.0)
    # 50 ms over the 2 measured frames: 25 ms per frame more, in the total too.
    assert at_close[PUBLISHER] - at_last_frame >= 0.9 * BURN_S * 1000 / 2
    assert at_close["total"] >= at_close[PUBLISHER]
