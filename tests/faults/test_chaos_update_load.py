"""Chaos: SIGTERM while an update's new model is still loading (libedgetpu hangs).

The validator loads a release in a separate worker before anything changes; on a box
whose Edge TPU runtime hangs while loading (a wedged USB accelerator), that load can take
up to ``inference.load_timeout``. A stop meanwhile is not a verdict on the release: the
request must end ``failed``/``interrupted`` at the stop, as the README promises ("A stop
answers them at once"), not be left for the next start, and the daemon must exit promptly.

The daemon runs on the Edge TPU model through the real ``load_delegate`` path with the
test delegate library (tests/support/delegate/); once it serves, the library file is
replaced with a build that hangs, so only the update's load hangs (the running worker
keeps the library it loaded).
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.broker import MqttSubscriber, wait_until
from tests.support.daemon import DaemonProcess
from tests.support.delegate_lib import LOG_ENV, build_delegate, delegate_log
from tests.support.fake_tpu import write_state
from tests.support.paths import REPO, fixture_model
from tests.support.tpu_plugin import fake_tpu_env
from tests.support.updates_e2e import Operator, states_of, wait_terminal, write_public_key
from tests.support.updates_http import FileServer, Route
from tests.support.updates_release import make_release

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

TPU_MODEL = fixture_model("color_uint8_edgetpu.tflite")
CPU_MODEL = fixture_model("color_uint8.tflite")
LABELS = fixture_model("color_labels.txt")


def test_sigterm_while_the_new_model_loads_answers_interrupted_at_the_stop(tmp_path, mqtt_broker):
    library = tmp_path / "libedgetpu-test.so"
    shutil.copyfile(build_delegate(tmp_path, "ok"), library)
    hang = build_delegate(tmp_path, "hang")
    state, log = tmp_path / "tpu.json", tmp_path / "delegate.log"
    write_state(state, delegate="real")
    key = Ed25519PrivateKey.generate()
    pub = write_public_key(key, tmp_path / "trusted.pub")
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    daemon = DaemonProcess(
        workdir,
        mqtt_broker.port,
        REPO / "models" / "demo" / "clip.avi",
        TPU_MODEL,
        LABELS,
        env={**fake_tpu_env(state), LOG_ENV: str(log)},
        model={"edgetpu_library": str(library), "name": "cls"},
        inference={"load_timeout": 60.0},
        mqtt={"publish_every_frame": True},
        updates={
            "enabled": True,
            "trusted_keys": [str(pub)],
            "allow_http": True,
            "allowed_hosts": ["127.0.0.1"],
        },
    )
    topics = daemon.topics
    sub = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [topics.results, topics.model])
    sub.start()
    operator = Operator(mqtt_broker.host, mqtt_broker.port)
    files = {
        "color_uint8_edgetpu.tflite": ("model", TPU_MODEL.read_bytes()),
        "color_uint8.tflite": ("cpu_model", CPU_MODEL.read_bytes()),
        "labels.txt": ("labels", LABELS.read_bytes()),
    }
    release = make_release(tmp_path / "releases", key, "2.0.0", name="cls", files=files)
    try:
        with FileServer() as server:
            for name, data in release.files.items():
                server.add(f"/2.0.0/{name}", Route(body=data))
            daemon.start()
            wait_until(lambda: sub.on(topics.results), 60, "a first result")
            os.replace(hang, library)  # from now on, a new worker's load hangs
            rid = operator.update(topics.base, release.envelope, server.url("/2.0.0/"))
            wait_until(
                lambda: "create mode=hang" in delegate_log(log), 30, "the release's load to hang"
            )
            assert [s["state"] for s in states_of(sub, topics.model, rid)][-1] == "verifying"
            stopping = time.monotonic()
            assert daemon.stop(signal.SIGTERM, timeout=30) == 0, daemon.log_tail()
            exit_s = time.monotonic() - stopping
            final = wait_terminal(sub, topics.model, rid, 5)  # published at the stop
            assert (final["state"], final["reason"]) == ("failed", "interrupted"), final
            assert exit_s < 10, f"took {exit_s:.1f}s to stop\n{daemon.log_tail()}"
            assert not (workdir / "state" / "update-request.json").exists()
    finally:
        operator.close()
        sub.stop()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop(signal.SIGKILL)
