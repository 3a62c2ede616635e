"""Soak: the daemon at full speed for a long time; memory, fds and threads stay flat.

The demo clip is copied with a header rate of 1000 fps, so the paced file camera reads it
flat out and the pipeline runs as fast as the CPU allows (the camera keeps only the
newest frame), publishing every frame. Every ``EDGE_AGENT_SOAK_INTERVAL`` seconds the
test samples, from /proc, the RSS, open fds and threads of the daemon and of its worker
processes (forkserver, inference worker, resource tracker).

Flat means: after a warm-up, the median RSS of the last fifth of the run is within
``RSS_GROWTH_MB`` of the median of the first fifth, for the daemon and for the workers;
fd and thread counts never exceed the first fifth's maximum by more than 2; the set of
processes is unchanged; no worker restart; results keep flowing.

Duration: ``EDGE_AGENT_SOAK_SECONDS`` (default 1800). Run with ``make soak``.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest

from tests.support.broker import MqttSubscriber
from tests.support.chaos import DEMO, figure, running_daemon
from tests.support.chaos_procs import sample_tree, write_fast_clip

DURATION_S = float(os.environ.get("EDGE_AGENT_SOAK_SECONDS", "1800"))
INTERVAL_S = float(os.environ.get("EDGE_AGENT_SOAK_INTERVAL", str(max(5.0, DURATION_S / 100))))
WARMUP_S = min(60.0, DURATION_S * 0.1)
RSS_GROWTH_MB = 16.0
COUNT_SLACK = 2

pytestmark = [pytest.mark.soak, pytest.mark.timeout(DURATION_S + 240)]


def median_of(rows: list[dict], key: str) -> float:
    """Median of one column."""
    return statistics.median(r[key] for r in rows)


def trend(first: list[dict], last: list[dict], key: str) -> str:
    """``a->b``: the column's median in the first and in the last fifth of the run."""
    return f"{median_of(first, key):.1f}->{median_of(last, key):.1f}"


def test_soak_resources_stay_flat(tmp_path, mqtt_broker):
    clip = write_fast_clip(DEMO / "clip.avi", tmp_path / "fast.avi")
    rows: list[dict] = []
    with running_daemon(
        tmp_path / "daemon",
        mqtt_broker.port,
        clip,
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        mqtt={"publish_every_frame": True},
        stats={"interval": 5.0},
        logging={"level": "WARNING"},
    ) as daemon:
        topics = daemon.topics
        sub = MqttSubscriber(  # counts only: a soak would not fit every message in memory
            mqtt_broker.host, mqtt_broker.port, [topics.results, topics.stats], keep_messages=False
        ).start()
        try:
            deadline = time.monotonic() + 30
            while sub.count(topics.results) == 0:
                assert time.monotonic() < deadline, "no results within 30 s"
                time.sleep(0.1)
            started = time.monotonic()
            end = started + DURATION_S
            next_at = started
            while time.monotonic() < end:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += INTERVAL_S
                assert daemon.alive(), "daemon died during the soak"
                procs = sample_tree(daemon.pid)
                main, workers = procs[0], procs[1:]
                row = {
                    "t": time.monotonic() - started,
                    "rss_daemon_mb": main.rss_kb / 1024,
                    "rss_workers_mb": sum(p.rss_kb for p in workers) / 1024,
                    "fds": sum(p.fds for p in procs),
                    "threads": sum(p.threads for p in procs),
                    "procs": len(procs),
                    "results": sub.count(topics.results),
                }
                rows.append(row)
                print(
                    "SOAK t={t:.0f}s rss_daemon={rss_daemon_mb:.1f}MB "
                    "rss_workers={rss_workers_mb:.1f}MB fds={fds} threads={threads} "
                    "procs={procs} results={results}".format(**row)
                )
            stats = sub.last_json(topics.stats)
            assert daemon.stop(timeout=20) == 0
        finally:
            sub.stop()

    settled = [r for r in rows if r["t"] >= WARMUP_S]
    fifth = max(1, len(settled) // 5)
    first, last = settled[:fifth], settled[-fifth:]
    span_s = settled[-1]["t"] - settled[0]["t"]
    rate = (settled[-1]["results"] - settled[0]["results"]) / max(span_s, 1e-9)
    growth = {
        k: median_of(last, k) - median_of(first, k) for k in ("rss_daemon_mb", "rss_workers_mb")
    }
    figure(
        "soak",
        duration_s=DURATION_S,
        samples=len(rows),
        results_per_s=rate,
        results=rows[-1]["results"],
        rss_daemon_mb=trend(first, last, "rss_daemon_mb"),
        rss_workers_mb=trend(first, last, "rss_workers_mb"),
        fds=f"{max(r['fds'] for r in first)}->{max(r['fds'] for r in last)}",
        threads=f"{max(r['threads'] for r in first)}->{max(r['threads'] for r in last)}",
        procs=f"{first[0]['procs']}->{last[-1]['procs']}",
        worker_restarts=stats["worker_restarts"],
    )
    assert len(settled) >= 10, "too few samples after the warm-up: raise the duration"
    assert growth["rss_daemon_mb"] <= RSS_GROWTH_MB, growth
    assert growth["rss_workers_mb"] <= RSS_GROWTH_MB, growth
    assert max(r["fds"] for r in last) <= max(r["fds"] for r in first) + COUNT_SLACK
    assert max(r["threads"] for r in last) <= max(r["threads"] for r in first) + COUNT_SLACK
    assert {r["procs"] for r in settled} == {first[0]["procs"]}, "processes came or went"
    assert stats["worker_restarts"] == 0
    assert rate >= 5.0, f"only {rate:.1f} results/s at full speed"
