"""Chaos: two daemons started on one state directory, and the lock a killed one leaves.

A second ``edge-agent run`` on the running daemon's ``device.state_dir`` (started by hand
beside the service, or a second unit given the same config) must not start: its model
store recovery would sweep the first one's downloads in progress and undo a release on
trial, it would answer the first one's update requests as interrupted, and under the
same client id the two would take turns kicking each other off the broker. It exits 2,
naming the key, the directory and the process that holds it. A daemon killed with
SIGKILL (a power cut) leaves its lock file behind, and that never stops the next start.
"""

from __future__ import annotations

import os
import signal

import pytest

from edge_agent.daemon.statedir import claim_state_dir
from tests.support.chaos import DEMO, figure
from tests.support.daemon import DEVICE_ID

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]


def test_a_second_daemon_on_the_same_state_dir_exits_and_leaves_the_first_alone(
    tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon
):
    state = tmp_path / "shared-state"
    args = (mqtt_broker.port, DEMO / "clip.avi", DEMO / "color_blobs.tflite", DEMO / "labels.txt")
    device = {"id": DEVICE_ID, "state_dir": str(state)}
    first = edge_daemon(*args, device=device)
    mqtt_subscriber.wait_count(first.topics.results, 5, timeout=45)
    # What the first one is doing in its store: a download in progress.
    download = state / "models" / ".staging" / "blobs-2.0.0-0123456789ab" / "model.tflite"
    download.parent.mkdir(parents=True)
    download.write_bytes(b"half a model")
    log_before = len(first.log())

    second = edge_daemon(*args, device=device)
    code = second.wait_exit(30)

    log = second.log()
    assert code == 2, f"second daemon exit code {code}:\n{second.log_tail()}"
    assert "device.state_dir" in log and str(state) in log, log[-3000:]
    assert f"pid {first.pid}" in log, log[-3000:]
    assert "connected" not in log, "the second daemon went as far as the broker"
    assert download.read_bytes() == b"half a model", "the first one's download was swept"
    assert first.alive()
    assert "connection lost" not in first.log()[log_before:], first.log_tail()
    count = mqtt_subscriber.count(first.topics.results)
    mqtt_subscriber.wait_count(first.topics.results, count + 5, timeout=30)

    # A power cut: the lock file stays, the lock does not. The next start runs.
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    first.kill_group()
    third = edge_daemon(*args, device=device)
    third.wait_log(r"camera cam0: streaming", timeout=45)
    count = mqtt_subscriber.count(third.topics.results)
    mqtt_subscriber.wait_count(third.topics.results, count + 5, timeout=30)
    assert third.stop(timeout=15) == 0
    figure("second_daemon_same_state_dir", exit_code=code, first_disturbed=0)


def test_the_temp_files_of_writes_a_power_cut_interrupted_are_removed_at_start(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    left = ["counts.json.tmp4242", "detect.json.tmp77", "update-request.json.tmp9"]
    for name in left:
        (state / name).write_text("{")
    (state / "notes.tmp").write_text("a user's file")  # not one of ours: kept
    fd = claim_state_dir(str(state))
    try:
        assert fd is not None
        assert sorted(p.name for p in state.iterdir()) == ["edge-agent.lock", "notes.tmp"]
    finally:
        os.close(fd)
