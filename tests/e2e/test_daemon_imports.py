"""Tier 3: the layout rule, checked on the real daemon: ``edge-agent run`` never imports
``edge_agent.tools`` (doctor, demo, bench, release tooling).

The daemon runs as a subprocess through a wrapper that records ``sys.modules`` when the
process exits, after it has built its pipeline, processed frames, published them and
stopped cleanly on SIGTERM.
"""

from __future__ import annotations

import json

import pytest

from tests.support.daemon import agent_command
from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DEMO = REPO / "models" / "demo"

# Runs the real CLI entry point; the atexit hook fires after main() returns.
WRAPPER = """
import atexit, json, sys
out = sys.argv[1]
def dump():
    with open(out, "w") as fh:
        json.dump(sorted(m for m in sys.modules if m.startswith("edge_agent")), fh)
atexit.register(dump)
from edge_agent.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_running_daemon_imports_no_tool_module(tmp_path, mqtt_broker, mqtt_subscriber, edge_daemon):
    daemon = edge_daemon(
        mqtt_broker.port,
        DEMO / "clip.avi",
        DEMO / "color_blobs.tflite",
        DEMO / "labels.txt",
        start=False,
    )
    modules_file = tmp_path / "modules.json"
    command = agent_command("run", "--config", str(daemon.config_path))
    assert command[1:3] == ["-m", "edge_agent"]
    daemon.start([command[0], "-c", WRAPPER, str(modules_file), *command[3:]])

    mqtt_subscriber.wait_count(daemon.topics.results, 3, timeout=45)
    assert daemon.stop(timeout=15) == 0, daemon.log_tail()

    modules = json.loads(modules_file.read_text())
    # The dump really covers a daemon that ran: its own modules are there.
    for needed in (
        "edge_agent.daemon.app",
        "edge_agent.daemon.pipeline",
        "edge_agent.inference.supervisor",
        "edge_agent.capture.camera",
        "edge_agent.publishing.client",
    ):
        assert needed in modules, f"{needed} not loaded: the wrapper did not see the daemon run"
    tools = [m for m in modules if m == "edge_agent.tools" or m.startswith("edge_agent.tools.")]
    assert tools == [], f"edge-agent run imported tool modules: {tools}"
