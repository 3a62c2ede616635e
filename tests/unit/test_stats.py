"""Tier 1: latency percentiles and snapshots give exact values on synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from edge_agent.daemon.stats import (
    COUNTERS,
    STAGES,
    LatencyTracker,
    PipelineStats,
    resource_usage,
)
from tests.support.clock import FakeClock


def test_percentiles_of_a_known_list():
    tracker = LatencyTracker()
    for ms in range(1, 101):
        tracker.add(ms)
    # numpy linear interpolation over 1..100: rank 0.5*99 = 49.5 and 0.99*99 = 98.01.
    assert tracker.p50 == 50.5
    assert tracker.p99 == pytest.approx(99.01, abs=1e-9)
    assert tracker.mean == 50.5
    assert tracker.count == 100
    assert tracker.percentile(0) == 1.0
    assert tracker.percentile(100) == 100.0


def test_small_lists_and_empty_window():
    tracker = LatencyTracker()
    assert tracker.p50 is None and tracker.p99 is None and tracker.mean is None
    assert tracker.summary() == {"p50": None, "p99": None, "mean": None, "max": None, "count": 0}
    for ms in (4.0, 1.0, 3.0, 2.0):
        tracker.add(ms)
    assert tracker.p50 == 2.5
    assert tracker.p99 == pytest.approx(3.97)  # 1 + 0.99*3 = 3.97
    assert tracker.summary() == {"p50": 2.5, "p99": 3.97, "mean": 2.5, "max": 4.0, "count": 4}


def test_window_is_bounded_to_most_recent_samples():
    tracker = LatencyTracker(size=10)
    for ms in range(100):
        tracker.add(ms)
    assert tracker.count == 10
    assert tracker.total == 100
    np.testing.assert_array_equal(tracker.samples(), np.arange(90, 100, dtype=np.float64))
    assert tracker.p50 == 94.5
    assert tracker.mean == 94.5


def test_window_drops_samples_older_than_max_age():
    clock = FakeClock(0.0)
    tracker = LatencyTracker(size=1000, max_age=3.0, clock=clock)
    for ms in (100.0, 100.0, 100.0):
        tracker.add(ms)
    clock.now = 2.0
    for ms in (1.0, 2.0, 3.0):
        tracker.add(ms)
    assert tracker.count == 6
    clock.now = 3.0  # the t=0 samples are exactly max_age old: still inside
    assert tracker.count == 6
    assert tracker.p50 == 51.5
    clock.now = 3.001
    assert tracker.count == 3
    assert tracker.p50 == 2.0
    assert tracker.total == 6
    clock.now = 5.001
    assert tracker.count == 0
    assert tracker.p99 is None


@pytest.mark.parametrize(("size", "max_age"), [(0, None), (10, 0.0), (10, -1.0)])
def test_tracker_rejects_bad_bounds(size, max_age):
    with pytest.raises(ValueError):
        LatencyTracker(size, max_age)


def test_snapshot_has_exact_rounded_values_and_is_json_ready():
    clock = FakeClock(1000.0)
    stats = PipelineStats(clock=clock, rate_window=5.0)
    for ms in (10.0, 20.0, 30.0, 40.0):
        stats.record("invoke", ms)
    stats.record("capture", 1.23456789)
    for i in range(31):  # 30 fps for one second
        clock.now = 1000.0 + i / 30
        stats.incr("frames")
    stats.incr("dropped", 2)
    stats.incr("model_swaps")  # unknown counters appear on first use
    stats.record("custom", 5.0)  # so do unknown stages
    clock.now = 1001.0

    snap = stats.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    assert snap["fps"] == 30.0
    assert snap["uptime_s"] == 1.0
    assert snap["latency_ms"]["invoke"] == {
        "p50": 25.0,
        "p99": 39.7,
        "mean": 25.0,
        "max": 40.0,
        "count": 4,
    }
    assert snap["latency_ms"]["capture"]["p50"] == 1.235
    assert snap["latency_ms"]["custom"]["count"] == 1
    assert snap["latency_ms"]["publish"] == {
        "p50": None,
        "p99": None,
        "mean": None,
        "max": None,
        "count": 0,
    }
    assert set(STAGES) <= set(snap["latency_ms"])
    assert snap["counters"]["frames"] == 31
    assert snap["counters"]["dropped"] == 2
    assert snap["counters"]["model_swaps"] == 1
    assert snap["counters"]["worker_restarts"] == 0
    assert set(COUNTERS) <= set(snap["counters"])
    assert "resources" not in snap
    assert "never" not in snap["counters"]  # only counters that exist are reported


def test_snapshot_window_bound_applies_per_stage():
    stats = PipelineStats(window=3)
    for ms in (100.0, 1.0, 2.0, 3.0):
        stats.record("invoke", ms)
    assert stats.snapshot()["latency_ms"]["invoke"]["max"] == 3.0


def test_concurrent_record_and_incr_lose_nothing():
    stats = PipelineStats(window=100_000)
    start = threading.Barrier(4, timeout=10)

    def work():
        start.wait()
        for _ in range(2000):
            stats.incr("frames")
            stats.record("invoke", 1.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    snap = stats.snapshot()
    assert snap["counters"]["frames"] == 8000
    assert snap["latency_ms"]["invoke"]["count"] == 8000


def test_resource_usage_reports_memory_fds_and_threads(tmp_path):
    before = resource_usage()
    assert set(before) == {
        "rss_mb",
        "max_rss_mb",
        "open_fds",
        "threads",
        "cpu_user_s",
        "cpu_system_s",
    }
    assert before["rss_mb"] > 0
    assert before["max_rss_mb"] > 0

    files = [open(tmp_path / f"f{i}", "w") for i in range(3)]  # noqa: SIM115
    try:
        assert resource_usage()["open_fds"] == before["open_fds"] + 3
    finally:
        for f in files:
            f.close()
    assert resource_usage()["open_fds"] == before["open_fds"]

    release = threading.Event()
    thread = threading.Thread(target=release.wait, args=(10,))
    thread.start()
    try:
        assert resource_usage()["threads"] == before["threads"] + 1
    finally:
        release.set()
        thread.join(timeout=10)

    # In a fresh interpreter: in this long-lived test process freed memory may be reused
    # in place (it did on CPython 3.9 with numpy 2.0), so the growth would not show.
    probe = (
        "import numpy as np\n"
        "from edge_agent.daemon.stats import resource_usage\n"
        "before = resource_usage()['rss_mb']\n"
        "block = np.ones(64 * 1024 * 1024, dtype=np.uint8)  # touched: really resident\n"
        "print(before, resource_usage()['rss_mb'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert float(out[1]) >= float(out[0]) + 60, out


def test_snapshot_can_include_resources():
    snap = PipelineStats().snapshot(resources=True)
    assert snap["resources"]["threads"] >= 1
    assert json.loads(json.dumps(snap)) == snap
