"""Measure what a Home Assistant recorder would write for one device, over N seconds.

A fresh mosquitto, a subscriber to ``#`` started first, then ``edge-agent run`` on the
demo clip (three moving squares; the red one leaves and comes back every 10 s) with the
object events on and the per-frame results off. Prints messages per second per camera
outside events and snapshots, and per Home Assistant entity the messages on its state
topic against the state changes (the rows the recorder writes), its value templates
rendered as Home Assistant renders them.

    .venv/bin/python tools/recorder_load.py --seconds 60
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.tools.bench.recorder_load import Recorder, format_report, summarize  # noqa: E402
from edge_agent.tools.demo.brokers import LocalMosquitto, find_mosquitto  # noqa: E402

DEMO = REPO / "models" / "demo"
CONFIG = """\
[device]
id = "recorder-load"
state_dir = "{state}"

[model]
path = "{demo}/color_blobs.tflite"
labels = "{demo}/labels.txt"
num_threads = 1

[mqtt]
host = "127.0.0.1"
port = {port}
publish_results = "{results}"

[events]
labels = ["red", "green", "blue"]

[[camera]]
name = "cam0"
source = "{demo}/clip.avi"
loop = true
"""


def main(argv: list[str] | None = None) -> int:
    """Run once and print the report; 1 when the daemon did not run the whole window."""
    ap = argparse.ArgumentParser(prog="tools/recorder_load.py", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the measured window")
    ap.add_argument(
        "--results", default="off", choices=["off", "detections", "all"], help="publish_results"
    )
    args = ap.parse_args(argv)
    binary = find_mosquitto()
    if binary is None:
        print("recorder_load: mosquitto not found (make broker installs it)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="recorder-load-") as work:
        workdir = Path(work)
        broker = LocalMosquitto(binary, workdir)
        broker.start()
        recorder = Recorder("127.0.0.1", broker.port)
        try:
            if not recorder.wait_subscribed(10):
                print("recorder_load: the subscription was not acknowledged", file=sys.stderr)
                return 1
            config = workdir / "config.toml"
            config.write_text(
                CONFIG.format(
                    state=workdir / "state", demo=DEMO, port=broker.port, results=args.results
                )
            )
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            daemon = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / "daemon.log", "wb"),  # noqa: SIM115 - closed with the dir
            )
            try:
                events = "edge-agent/recorder-load/events"
                deadline = time.monotonic() + 60
                while not any(m.topic == events for m in recorder.messages()):
                    if time.monotonic() > deadline or daemon.poll() is not None:
                        print("recorder_load: no event within 60 s", file=sys.stderr)
                        return 1
                    time.sleep(0.1)
                start = time.monotonic()  # from the first event: the daemon is up
                time.sleep(args.seconds)
                end = time.monotonic()
                alive = daemon.poll() is None
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(20)
        finally:
            recorder.stop()
            broker.stop()
        report = summarize(recorder.messages(), start, end, 1, events)
        print(format_report(report))
        return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
