"""Chaos: a broker outage while the spool cannot be written (read-only or broken state
dir): results wait in memory up to the queue's bound, and those dropped beyond it are
lost. Each is counted as such (``lost`` in the stats and the status), not mixed into
``dropped``, which mostly counts the stats messages skipped while offline."""

from __future__ import annotations

import pytest

from tests.support.broker import free_port, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]


def test_results_dropped_from_memory_without_a_spool_are_counted_lost(
    tmp_path, mqtt_publisher_factory
):
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")  # the spool cannot be opened
    pub = mqtt_publisher_factory(free_port(), spool_dir=blocker / "spool", max_queued=5)
    wait_until(lambda: pub.storage_error != "", 10, "the storage error")
    for seq in range(12):
        pub.publish_result({"seq": seq})
    assert pub.stats()["lost"] == 7  # 12 results, 5 kept in memory, no broker
    assert pub.durability()["lost"] == 7  # in the status too
