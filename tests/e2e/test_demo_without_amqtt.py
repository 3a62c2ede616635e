"""``edge-agent demo`` where amqtt cannot be installed (Python 3.9): a local mosquitto serves.

amqtt is hidden from the demo process by a ``sitecustomize`` (``sys.modules["amqtt"] =
None`` makes every import of it fail), which is what a 3.9 install looks like.
"""

from __future__ import annotations

import re
import socket
import subprocess

import pytest

from tests.support.broker import MOSQUITTO
from tests.support.daemon import agent_command, daemon_environment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed"),
]

LOCAL = re.compile(r"^  broker   local mosquitto on 127\.0\.0\.1:(\d+) ", re.M)
SUMMARY = re.compile(r"^summary: (\d+) results", re.M)


def test_demo_without_amqtt_uses_a_local_mosquitto(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['amqtt'] = None\n")
    (tmp_path / "tmp").mkdir()
    env = daemon_environment({"TMPDIR": str(tmp_path / "tmp")})
    env["PYTHONPATH"] = f"{hide}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(hide)
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 1883)) == 0:
            pytest.skip("a broker answers on localhost:1883; the demo would use it")
    run = subprocess.run(
        agent_command("demo", "--seconds", "5"),
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    port = int(LOCAL.search(run.stdout).group(1))
    assert int(SUMMARY.search(run.stdout).group(1)) > 0
    assert "local mosquitto broker stopped" in run.stdout
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert list((tmp_path / "tmp").glob("edge-agent-demo-*")) == []
