"""Chaos: a power cut inside the spool's atomic rewrites (the cursor, a damaged segment).

:func:`~edge_agent.atomicfile.write_atomic` writes ``<name>.tmp<pid>`` and renames it; a
process killed before the rename leaves that file behind, under a name no later run
writes again (another pid). What must hold: the next open of the spool removes them, so
the spool's disk use stays within its bound however many power cuts it saw, and the
records are intact. A loss ledger damaged into valid but absurd JSON counts as 0, like
any other unreadable one, and never stops the publisher from starting.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from edge_agent.publishing.spool import Spool
from tests.support.broker import free_port, wait_until

# Every atomic write dies before its rename. "cursor": 40 records appended, 10 committed
# with cursor_every=1, so the cursor save dies. "scan": the open of a spool with a
# damaged record in the middle of a segment, so the segment's rewrite dies.
_KILLED_IN_RENAME = """
import os, signal, sys
from edge_agent.publishing.spool import Spool
os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[2] == "cursor":
    spool = Spool(sys.argv[1], segment_bytes=1 << 20, cursor_every=1)
    for i in range(40):
        spool.append("edge/dev1/results", b"m%02d" % i)
    spool.commit(spool.read(10)[-1].position)
else:
    Spool(sys.argv[1])
"""


def _killed(directory, what: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_IN_RENAME, str(directory), what], timeout=60
    )
    assert proc.returncode == -signal.SIGKILL


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.glob("*.tmp*"))


def test_temp_files_of_interrupted_atomic_writes_are_removed_at_open(tmp_path):
    _killed(tmp_path, "cursor")
    assert [n.partition(".tmp")[0] for n in _leftovers(tmp_path)] == ["cursor"]
    with Spool(tmp_path) as spool:  # the cursor never made it: all 40 come back
        positions = [m.position for m in spool.read(100)]
        assert [m.payload for m in spool.read(100)] == [b"m%02d" % i for i in range(40)]
    assert _leftovers(tmp_path) == []
    segment = next(tmp_path.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[positions[29].offset - 1] ^= 0x01  # damage record 30: the open rewrites the segment
    segment.write_bytes(bytes(data))
    _killed(tmp_path, "scan")
    assert [n.partition(".tmp")[0] for n in _leftovers(tmp_path)] == [segment.name]
    with Spool(tmp_path) as spool:
        got = [m.payload for m in spool.read(100)]
        assert got == [b"m%02d" % i for i in range(40) if i != 29]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "damaged",
    [b'{"possibly_lost": 1e999}', b'{"possibly_lost": Infinity}', b"[" * 100_000],
    ids=["huge", "infinity", "nested"],
)
def test_a_damaged_loss_ledger_does_not_stop_the_publisher(
    tmp_path, mqtt_publisher_factory, damaged
):
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "unsecured").write_bytes(damaged)
    pub = mqtt_publisher_factory(free_port(), spool_dir=tmp_path / "spool")  # no broker
    pub.publish_result({"seq": 0})
    wait_until(lambda: pub.stats()["spool_pending"] == 1, 10, "the result spooled")
    assert pub.durability()["possibly_lost_last_run"] == 0
