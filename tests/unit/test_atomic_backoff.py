"""Tier 1: the shared helpers: capped exponential backoff and the atomic file write."""

from __future__ import annotations

import os
import random

import pytest

from edge_agent import atomicfile
from edge_agent.backoff import Backoff, StableBackoff
from tests.support.clock import FakeClock


def test_backoff_doubles_caps_and_resets():
    backoff = Backoff(0.25, 1.0)
    assert [backoff.next() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    backoff.reset()
    assert backoff.upcoming == 0.25 and backoff.next() == 0.25


def test_backoff_jitter_stays_within_its_fraction():
    backoff = Backoff(1.0, 8.0, jitter=0.5, rng=random.Random(7))
    for expected in (1.0, 2.0, 4.0, 8.0, 8.0, 8.0):
        delay = backoff.next()
        assert expected * 0.5 <= delay <= expected
    delays = {Backoff(1.0, 1.0, jitter=0.5, rng=random.Random(s)).next() for s in range(20)}
    assert len(delays) > 10  # really random, not a constant factor


def test_backoff_cap_below_initial_is_raised_and_bad_values_refused():
    assert Backoff(2.0, 0.5).next() == 2.0
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0, jitter=1.5)


def test_stable_backoff_is_reset_only_by_a_success_as_long_as_its_delay():
    clock = FakeClock()
    backoff = StableBackoff(0.5, 4.0, clock=clock)
    delays = []
    for _ in range(5):  # each success fails 0.1 s after it began: one outage
        backoff.succeeded()
        clock.now += 0.1
        delays.append(backoff.next())
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    backoff.succeeded()
    clock.now += 4.0  # up as long as it was waited for: the next failure starts afresh
    assert backoff.next() == 0.5
    backoff.succeeded()
    clock.now += 0.6  # a stream dropping every 0.6 s stays at the initial delay
    assert backoff.next() == 0.5
    assert backoff.next() == 1.0  # failures without a success in between keep doubling


def test_write_atomic_replaces_whole_file_and_reports_points(tmp_path, monkeypatch):
    target = tmp_path / "pointer.json"
    target.write_bytes(b"old")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    points = []
    atomicfile.write_atomic(target, b"new" * 1000, mode=0o600, hook=points.append, point="p")
    assert target.read_bytes() == b"new" * 1000
    assert points == ["p_written", "p_synced", "p_renamed"]
    assert len(synced) == 2  # the file, then the directory holding the rename
    assert (target.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pointer.json"]


def test_write_atomic_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "cursor"
    target.write_bytes(b"old")

    def full_disk(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError):
        atomicfile.write_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cursor"]
