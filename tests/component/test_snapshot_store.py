"""Tier 2: snapshots kept on disk by the snapshot thread: real JPEGs, a bounded directory,
temp files of a power cut removed, a refusing disk counted while publishing goes on."""

from __future__ import annotations

import queue

import cv2
import numpy as np

from edge_agent.daemon.snapshot_store import SnapshotStore
from edge_agent.daemon.snapshots import Snapshot, SnapshotWriter
from edge_agent.publishing.topics import Topics


def snapshot(i: int) -> Snapshot:
    rng = np.random.default_rng(i)  # noise: JPEGs of a few tens of kB each
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return Snapshot("cam0", "red", i, 0.9, (10.0, 10.0, 100.0, 100.0), image, f"ev{i:03d}")


def run_writer(store: SnapshotStore, count: int) -> list[bytes]:
    """Publish ``count`` snapshots one after the other (each waited for: the queue keeps 4)."""
    published: queue.Queue[bytes] = queue.Queue()
    writer = SnapshotWriter(Topics("edge", "dev"), lambda t, j: published.put(j), store=store)
    writer.start()
    sent = []
    for i in range(count):
        writer.submit(snapshot(i))
        sent.append(published.get(timeout=10))
    writer.stop(timeout=5)
    return sent


def test_kept_jpegs_decode_and_the_directory_stays_bounded(tmp_path):
    root = tmp_path / "snapshots"
    (root / "cam0").mkdir(parents=True)
    (root / "cam0" / "old-red.jpg.tmp4242").write_bytes(b"half a jpeg")  # a power cut's
    store = SnapshotStore(root, max_bytes=5 * 60_000)
    sent = run_writer(store, 30)
    files = sorted((root / "cam0").iterdir())
    assert all(f.suffix == ".jpg" for f in files), files  # the temp file is gone
    total = sum(f.stat().st_size for f in files)
    assert total <= store.max_bytes and total == store.total_bytes
    assert 1 < len(files) < 30 and store.pruned == 30 - len(files) and store.saved == 30
    # The newest survive: the last one published is on disk, byte for byte.
    assert (root / "cam0" / "ev029-red.jpg").read_bytes() == sent[-1]
    assert not (root / "cam0" / "ev000-red.jpg").exists()
    image = cv2.imdecode(np.frombuffer(sent[-1], np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (240, 320, 3)
    # A restart with a lower bound prunes what the last run kept.
    again = SnapshotStore(root, max_bytes=2 * 60_000)
    again.open()
    assert again.total_bytes <= again.max_bytes and (root / "cam0" / "ev029-red.jpg").exists()


def test_a_refusing_disk_is_counted_and_snapshots_are_still_published(tmp_path, caplog):
    blocker = tmp_path / "snapshots"
    blocker.write_text("a file where the directory should be")
    store = SnapshotStore(blocker, max_bytes=10_000_000)
    sent = run_writer(store, 3)
    assert len(sent) == 3 and store.saved == 0 and store.errors >= 3
    logged = [r for r in caplog.records if "cannot keep snapshots" in r.getMessage()]
    assert len(logged) == 1 and "camera" in logged[0].getMessage()  # once a minute at most
