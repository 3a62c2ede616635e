"""Tier 1: which kept snapshots go first, and how their files are named."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.daemon.snapshot_store import StoredFile, file_name, to_prune


def test_oldest_go_first_until_the_rest_fit():
    files = [StoredFile(Path(f"/s/{i}.jpg"), 100, float(t)) for i, t in enumerate([5, 1, 3, 2])]
    doomed = to_prune(files, 250)
    assert [f.mtime for f in doomed] == [1.0, 2.0]  # 400 -> 200 bytes, the two oldest
    assert to_prune(files, 400) == [] and len(to_prune(files, 0)) == 4


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.floats(0, 1e6)), max_size=40),
    st.integers(0, 50_000),
)
def test_the_bound_holds_and_nothing_newer_than_a_survivor_is_removed(specs, bound):
    files = [StoredFile(Path(f"/s/{i}.jpg"), size, t) for i, (size, t) in enumerate(specs)]
    doomed = to_prune(files, bound)
    kept = [f for f in files if f not in doomed]
    assert sum(f.size for f in kept) <= bound
    if doomed and kept:
        assert max(f.mtime for f in doomed) <= min(f.mtime for f in kept)
    if doomed:  # no more removed than needed: the last one removed was still over
        assert sum(f.size for f in kept) + doomed[-1].size > bound


def test_names_carry_the_event_and_label_and_stay_inside_the_directory():
    assert file_name("1796445797.087373-3cm8au", "red") == "1796445797.087373-3cm8au-red.jpg"
    name = file_name("../../etc/passwd", "traffic light/x")
    assert "/" not in name and name.endswith("-traffic_light_x.jpg")
