"""Tier 3: ``edge-agent demo`` runs the real daemon and prints what it publishes.

``python -m edge_agent demo`` runs headless as a subprocess, exactly as a user or CI
would run it. Its printed result lines are checked against the demo clip's per-frame
truth (so the boxes shown are the daemon's real ones, in x0,y0,x1,y1 order), its stats
lines and summary against the results it printed, and after it exits nothing of it
may remain: no daemon or worker process, no broker port, no temporary directory.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import paho.mqtt.publish as publish
import pytest

from tests.support.broker import MQTT5_FALLBACK, MqttSubscriber
from tests.support.daemon import agent_command, daemon_environment
from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TRUTH = json.loads((REPO / "models" / "demo" / "clip_truth.json").read_text())["frames"]
RESULT = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  cam0  frame +(\d+)  cpu +(\d+\.\d\d) ms  (.+)$")
DETECTION = re.compile(r"^(red|green|blue) ([01]\.\d\d) \[(-?\d+),(-?\d+),(-?\d+),(-?\d+)\]$")
STATS = re.compile(
    r"^stats +(\d+\.\d) fps \| invoke p50 (\d+\.\d\d) ms  p99 (\d+\.\d\d) ms \| "
    r"(\d+) dropped frames \| backend cpu \| (\d+) frames"
)
SUMMARY = re.compile(r"^summary: (\d+) results \(blue (\d+), green (\d+), red (\d+)\)")
DAEMON = re.compile(r"^  daemon   pid (\d+): edge-agent run --config (\S+)$", re.M)
EMBEDDED = re.compile(r"^  broker   (?:embedded|local mosquitto) on 127\.0\.0\.1:(\d+) ", re.M)
WATCH = re.compile(r"-t '(edge-agent-demo/demo-[0-9a-f]{6})/#'")


def iou(a, b) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def environment(tmp_path: Path) -> dict[str, str]:
    """The demo's environment, with its temporary directory made inside ``tmp_path``."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return daemon_environment({"TMPDIR": str(tmp_path / "tmp")})


def leftovers(tmp_path: Path) -> list[str]:
    """Demo directories left in the demo's TMPDIR."""
    return [p.name for p in (tmp_path / "tmp").glob("edge-agent-demo-*")]


def demo(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -m edge_agent demo ARGS`` to its end, output captured."""
    return subprocess.run(
        agent_command("demo", *args),
        cwd=tmp_path,
        env=environment(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def session_members(sid: int) -> list[int]:
    """Processes whose session is ``sid`` (the daemon leads its own session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the ")" closing the command: state ppid pgrp session ...
        if int(stat.rsplit(")", 1)[1].split()[3]) == sid:
            found.append(int(entry.name))
    return found


def check_result_lines(out: str) -> list[int]:
    """Every result line shows exactly the clip's red, green and blue squares where the
    truth file puts them; returns the frame ids in printed order."""
    frames = []
    for line in out.splitlines():
        match = RESULT.match(line)
        if not match:
            continue
        frame_id = int(match.group(1))
        truth = TRUTH[frame_id % len(TRUTH)]
        dets = [DETECTION.match(d) for d in match.group(3).split("  ")]
        assert all(dets), f"unreadable detections in {line!r}"
        assert sorted(d.group(1) for d in dets) == ["blue", "green", "red"], line
        for d in dets:
            box = [int(v) for v in d.groups()[2:]]
            assert 0.5 <= float(d.group(2)) <= 1.0, line
            overlap = iou(box, truth[d.group(1)])
            assert overlap >= 0.5, f"{line!r}: {d.group(1)} vs truth {truth[d.group(1)]}"
        frames.append(frame_id)
    return frames


def check_gone(out: str) -> None:
    """No daemon, worker, broker port or temporary directory survived the demo."""
    pid, config = DAEMON.search(out).groups()
    assert not Path(f"/proc/{pid}").exists(), f"daemon {pid} still running"
    assert session_members(int(pid)) == [], "processes of the daemon's session remain"
    assert not Path(config).parent.exists(), f"{Path(config).parent} was not removed"
    embedded = EMBEDDED.search(out)
    if embedded:  # (no embedded broker when something answers on localhost:1883)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(embedded.group(1))), timeout=2).close()


def test_headless_run_prints_the_detections_and_stats_and_leaves_nothing(tmp_path):
    run = demo(tmp_path, "--seconds", "8")
    out = run.stdout
    assert run.returncode == 0, f"{out}\n{run.stderr}"
    assert "Traceback" not in out + run.stderr

    frames = check_result_lines(out)
    assert len(frames) >= 30, f"only {len(frames)} result lines:\n{out}"
    assert frames == sorted(set(frames)), "frame ids are not strictly increasing"
    stats = [STATS.match(line) for line in out.splitlines() if line.startswith("stats")]
    assert stats and all(stats), f"no readable stats line:\n{out}"
    assert all(float(s.group(1)) > 0 and int(s.group(5)) > 0 for s in stats)
    assert float(stats[-1].group(2)) <= float(stats[-1].group(3))  # p50 <= p99
    summary = next(SUMMARY.match(line) for line in out.splitlines() if SUMMARY.match(line))
    assert [int(v) for v in summary.groups()] == [len(frames)] * 4
    assert "daemon exited 0" in out
    check_gone(out)
    assert leftovers(tmp_path) == []
    # The daemon connected at once: told that amqtt speaks 3.1.1 only, it made no MQTT 5
    # attempt for the broker to leave unanswered (its log goes to stderr).
    if "broker   embedded" in out:
        assert not MQTT5_FALLBACK.search(run.stderr), run.stderr


def test_ctrl_c_stops_the_daemon_cleanly(tmp_path):
    proc = subprocess.Popen(
        agent_command("demo"),
        cwd=tmp_path,
        env=environment(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    first_result = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if RESULT.match(line.rstrip("\n")):
                first_result.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert first_result.wait(45), "no result line within 45 s:\n" + "".join(lines)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the foreground process
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    out, err = "".join(lines), proc.stderr.read()
    assert code == 0, f"{out}\n{err}"
    assert "Traceback" not in out + err
    assert "stopping: SIGTERM to the daemon" in out
    assert "daemon exited 0" in out
    check_gone(out)
    assert leftovers(tmp_path) == []


def test_given_broker_gets_the_results_and_keep_keeps_the_directory(
    tmp_path, mqtt_broker, mqtt_subscriber
):
    run = demo(tmp_path, "--seconds", "6", "--broker", f"127.0.0.1:{mqtt_broker.port}", "--keep")
    out = run.stdout
    assert run.returncode == 0, f"{out}\n{run.stderr}"
    assert f"  broker   127.0.0.1:{mqtt_broker.port} (--broker)" in out
    base = WATCH.search(out).group(1)
    printed = check_result_lines(out)
    assert printed, out

    # The test's own subscriber saw the same frames the demo printed.
    published = [m.json()["frame_id"] for m in mqtt_subscriber.on(f"{base}/results")]
    assert set(printed) <= set(published)

    config = Path(DAEMON.search(out).group(2))
    try:
        assert f"port = {mqtt_broker.port}" in config.read_text()
        assert "num_threads = 1" in config.read_text()
        assert "stopped" in (config.parent / "daemon.log").read_text()
    finally:
        shutil.rmtree(config.parent, ignore_errors=True)

    # The broker stays up, so the demo removed the retained messages it left: a new
    # subscriber gets only the marker published after subscribing, nothing retained.
    late = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [f"{base}/#"]).start()
    try:
        publish.single(
            f"{base}/marker", b"m", qos=1, hostname=mqtt_broker.host, port=mqtt_broker.port
        )
        late.wait_for(f"{base}/marker", timeout=10)
        assert [m.topic for m in late.messages] == [f"{base}/marker"]
    finally:
        late.stop()


def test_missing_model_is_one_clear_error(tmp_path):
    run = demo(tmp_path, "--model", str(tmp_path / "nope.tflite"), "--source", "synthetic")
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"edge-agent demo: error: --model {tmp_path / 'nope.tflite'}: no such file"
    )
    assert run.stdout == ""
    assert leftovers(tmp_path) == []


def test_a_reader_that_goes_away_stops_the_demo_with_141(tmp_path):
    # `edge-agent demo | head -8`: the demo went on running the daemon, silently and (no
    # --seconds) forever, so the shell's pipeline never ended; then it exited 0.
    proc = subprocess.Popen(
        agent_command("demo"),
        cwd=tmp_path,
        env=environment(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        header = "".join(proc.stdout.readline() for _ in range(5))  # up to the daemon line
        proc.stdout.close()  # as head does after its lines: the next write gets EPIPE
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = proc.stderr.read()
    assert "Traceback" not in err, err
    assert code == 141, (code, err)
    check_gone(header)
    assert leftovers(tmp_path) == []
