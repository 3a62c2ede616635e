"""Tier 3: ``edge-agent model push --group G --canary 1`` halts when the canary fails.

Three daemons announce group ``lobby`` in their retained status. The canary (the first
device id in sorted order) does not trust the release key, so it refuses the release.
The operator's push, run as a real subprocess with its built-in lab server, must exit
non-zero, say which device failed and why, and never send the command to the others:
their model state stays what it was and they never see a command.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.publishing.topics import Topics
from tests.support.broker import MqttSubscriber, wait_until
from tests.support.daemon import PREFIX, daemon_environment
from tests.support.paths import REPO, fixture_model
from tests.support.updates_e2e import (
    pack_release,
    payloads,
    retained,
    updates_config,
    wait_results,
    write_public_key,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GROUP = "lobby"
DEVICES = ("cam-a", "cam-b", "cam-c")  # cam-a sorts first: the canary


def test_failing_canary_halts_the_group_rollout(tmp_path, mqtt_broker, edge_daemon):
    key = Ed25519PrivateKey.generate()
    trusted = write_public_key(key, tmp_path / "release.pub")
    stranger = write_public_key(Ed25519PrivateKey.generate(), tmp_path / "other.pub")
    model, labels = fixture_model("color_uint8.tflite"), fixture_model("color_labels.txt")
    release = pack_release(
        tmp_path / "releases", key, "colors", "1.0.0", model, labels=labels, task="classification"
    )
    observer = MqttSubscriber(
        mqtt_broker.host, mqtt_broker.port, [f"{PREFIX}/+/cmd/#", f"{PREFIX}/group/#"]
    ).start()
    watcher = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [f"{PREFIX}/#"]).start()
    topics = {device: Topics(PREFIX, device) for device in DEVICES}
    try:
        for device in DEVICES:
            edge_daemon(
                mqtt_broker.port, "synthetic:160x120", model, labels, camera={"fps": 5.0},
                device={"id": device, "groups": [GROUP]},
                mqtt={"publish_every_frame": True},
                updates=updates_config(stranger if device == "cam-a" else trusted),
            )  # fmt: skip
        for device in DEVICES:
            wait_results(watcher, topics[device].results, 2, timeout=40)
            wait_until(
                lambda d=device: any(
                    s["state"] == "running" and s["groups"] == [GROUP]
                    for s in payloads(watcher, topics[d].status)
                ),
                timeout=20,
                what=f"{device} running",
            )
        before = {d: retained(mqtt_broker, topics[d].model) for d in DEVICES}
        assert all(s["reason"] == "configured" for s in before.values()), before

        push = subprocess.run(
            [
                sys.executable, "-m", "edge_agent", "model", "push", str(release),
                "--group", GROUP, "--canary", "1",
                "--broker", f"{mqtt_broker.host}:{mqtt_broker.port}", "--prefix", PREFIX,
                "--serve", "127.0.0.1:0", "--request-id", "canary-test-1",
                "--key", str(trusted), "--timeout", "30",
            ],
            cwd=REPO, env=daemon_environment(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        output = push.stdout + push.stderr
        assert push.returncode == 1, output
        assert "cam-a: failed" in output and "untrusted_key" in output, output
        for device in ("cam-b", "cam-c"):
            assert f"{device}: skipped (canary_failed" in output, output
        assert "rollout incomplete" in push.stderr, output
        print(f"push --canary 1 output:\n{push.stdout}")

        # Only the canary was ever sent the command, on its own topic (the group was only
        # asked to announce itself: cmd/status/request).
        commands = [m.topic for m in observer.messages if "/cmd/model/" in m.topic]
        assert commands == [f"{PREFIX}/cam-a/cmd/model/update"], commands
        canary = [s for s in payloads(watcher, topics["cam-a"].model) if s["request_id"]]
        assert [(s["state"], s["reason"]) for s in canary] == [("failed", "untrusted_key")]
        for device in ("cam-b", "cam-c"):
            assert retained(mqtt_broker, topics[device].model) == before[device]
            assert not [s for s in payloads(watcher, topics[device].model) if s["request_id"]]
            n = len(watcher.on(topics[device].results))
            later = wait_results(watcher, topics[device].results, 2, after=n, timeout=10)
            assert {r["model"]["name"] for r in later} == {"color_uint8"}
            assert not (tmp_path / f"daemon{DEVICES.index(device)}/state/models/colors").exists()
    finally:
        observer.stop()
        watcher.stop()
