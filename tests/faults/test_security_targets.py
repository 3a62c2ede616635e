"""Security: a validly signed release meant for another box is refused before download.

The daemon is a box of type ``rpi4-coral-usb``, id ``e2e-dev``, in group ``lobby``,
running release ``blobs@1.0.0``. Releases signed by its trusted key but whose signed
targets leave it out (another device type, another device, another group, another model
name without ``replaces``) must each end ``failed``/``incompatible`` with not one request
at the HTTP server, while ``blobs@1.0.0`` keeps serving. Controls: a release naming this
box in each way installs, and so does a model change the manifest declares.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.updates.commands import build_update_command
from tests.support.broker import MOSQUITTO, MqttSubscriber
from tests.support.chaos import DEMO, figure
from tests.support.daemon import DEVICE_ID
from tests.support.updates_e2e import (
    Operator,
    updates_config,
    version_of,
    wait_results,
    wait_terminal,
    write_public_key,
)
from tests.support.updates_http import FileServer
from tests.support.updates_release import make_release

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(180),
    pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (apt-get install mosquitto)"),
]

DEVICE_TYPE = "rpi4-coral-usb"
GROUP = "lobby"
REFUSED = [
    ("another device type", "blobs", {"compatible": ["x86-pcie", "rpi5-hailo"]}),
    ("another device", "blobs", {"devices": ["other-dev"]}),
    ("another group", "blobs", {"groups": ["garage"]}),
    ("another model name", "garagecam", {}),
    ("replaces another model", "garagecam", {"replaces": ["doorcam"]}),
]
ACCEPTED = [
    ("this device type", "blobs", {"compatible": [DEVICE_TYPE, "x86-pcie"]}),
    ("this device", "blobs", {"devices": [DEVICE_ID, "other-dev"]}),
    ("this group", "blobs", {"groups": ["garage", GROUP]}),
    ("a declared model change", "garagecam", {"replaces": ["blobs"], "compatible": [DEVICE_TYPE]}),
]


def test_releases_for_other_boxes_are_refused_before_any_download(
    tmp_path, mqtt_broker, edge_daemon
):
    key = Ed25519PrivateKey.generate()
    pub = write_public_key(key, tmp_path / "trusted.pub")
    daemon = edge_daemon(
        mqtt_broker.port, DEMO / "clip.avi", DEMO / "color_blobs.tflite", DEMO / "labels.txt",
        device={"type": DEVICE_TYPE, "groups": [GROUP]},
        updates=updates_config(pub, health_frames=3),
    )  # fmt: skip
    topics = daemon.topics
    sub = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, ["#"]).start()
    operator = Operator(mqtt_broker.host, mqtt_broker.port)
    files = {
        "color_blobs.tflite": ("model", (DEMO / "color_blobs.tflite").read_bytes()),
        "labels.txt": ("labels", (DEMO / "labels.txt").read_bytes()),
    }
    minor = iter(range(1, 100))

    def send(name: str, targets: dict, rid: str) -> tuple[dict, int]:
        """Sign, serve and send a release; its final state and the requests it caused."""
        version = f"1.{next(minor)}.0"
        rel = make_release(
            tmp_path / "rel", key, version, name=name, files=files, task="auto", changes=targets
        )
        base = f"/{name}/{version}/"
        for file_name, data in rel.files.items():
            server.add(base + file_name, data)
        before = len(server.requests)
        operator.publish(
            f"{topics.base}/cmd/model/update",
            build_update_command(envelope=rel.envelope, base_url=server.url(base), request_id=rid),
        )
        state = wait_terminal(sub, topics.model, rid, timeout=60)
        return state, len(server.requests) - before

    try:
        with FileServer() as server:
            wait_results(sub, topics.results, 3, timeout=30, daemon=daemon)
            state, _ = send("blobs", {}, "start")
            assert state["state"] == "active", state
            running = ("blobs", state["version"])
            refused = {}
            for case, name, targets in REFUSED:
                state, requests = send(name, targets, case.replace(" ", "-"))
                refused[case] = requests
                assert (state["state"], state["reason"]) == ("failed", "incompatible"), state
                assert requests == 0, f"{case}: {requests} requests at the server"
                assert state["serving"] == {"name": running[0], "version": running[1]}
            n = len(sub.on(topics.results))
            later = wait_results(sub, topics.results, 3, after=n, daemon=daemon)
            assert {version_of(r) for r in later} == {running}
            for case, name, targets in ACCEPTED:
                state, requests = send(name, targets, case.replace(" ", "-"))
                assert (state["state"], state["name"]) == ("active", name), (case, state)
                assert requests >= 2, case
    finally:
        operator.close()
        sub.stop()
    figure(
        "targets", refused=len(refused), requests_when_refused=sum(refused.values()),
        accepted=len(ACCEPTED),
    )  # fmt: skip
    assert daemon.stop(timeout=15) == 0
