"""Operator tooling: keygen, pack, verify, and push through a real mosquitto broker to
simulated devices that run the real installer against the built-in lab server."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
import time

import pytest

from edge_agent.errors import ModelUpdateError
from edge_agent.publishing.settings import MqttSettings
from edge_agent.tools.release import operator
from edge_agent.tools.release.push import ServeSettings, push
from edge_agent.updates.commands import (
    ROLLBACK,
    UPDATE,
    command_kind,
    device_command_topic,
    group_command_topic,
    state_topic,
)
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.signing import TrustedKeys
from edge_agent.updates.store import ModelStore
from edge_agent.updates.transport import DownloadSettings
from tests.support.broker import MqttSubscriber
from tests.support.paths import SHARED
from tests.support.updates_http import FileServer
from tests.support.updates_release import fake_tflite

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PREFIX = "edge"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip("mosquitto not installed")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path_factory.mktemp("mosq") / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "mosquitto did not start"
            time.sleep(0.05)
    yield MqttSettings(host="127.0.0.1", port=port, connect_timeout=10.0)
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    kid = operator.keygen(d / "release.key", d / "release.pub")
    return d / "release.key", d / "release.pub", kid


class Device:
    """A simulated device: MQTT commands -> real UpdateInstaller -> retained states."""

    def __init__(self, broker, tmp, device_id, public_key, groups=(), validator=None):
        self.id = device_id
        self.store = ModelStore(tmp / device_id, keep_versions=2)
        self.commands = []
        self.stop = threading.Event()
        topics = [device_command_topic(PREFIX, device_id, k) for k in (UPDATE, ROLLBACK)]
        topics += [group_command_topic(PREFIX, g, k) for g in groups for k in (UPDATE, ROLLBACK)]
        self.client = MqttSubscriber(broker.host, broker.port, topics, name=device_id).start()
        self.installer = UpdateInstaller(
            self.store,
            TrustedKeys.from_paths([public_key]),
            UpdateSettings(download=DownloadSettings(allow_http=True, retries=0, read_timeout=5)),
            validator=validator,
            progress=lambda s: self.client.publish(
                state_topic(PREFIX, device_id), json.dumps(s), 1, retain=True
            ),
        )
        status = json.dumps({"online": True, "groups": list(groups)})
        self.client.publish(f"{PREFIX}/{device_id}/status", status, 1, retain=True)
        self.worker = threading.Thread(target=self._run)
        self.worker.start()

    def _run(self):
        while not self.stop.is_set():
            msg = self.client.message(len(self.commands), timeout=0.1)
            if msg is None:
                continue
            self.commands.append(msg.topic)
            try:
                if command_kind(msg.topic) == "update":
                    self.installer.install(msg.payload)
                else:
                    self.installer.rollback(msg.payload)
            except ModelUpdateError:
                pass  # already published as a state

    def close(self):
        self.stop.set()
        self.worker.join(10)
        for topic in (f"{PREFIX}/{self.id}/status", state_topic(PREFIX, self.id)):
            self.client.publish(topic, b"", 1, retain=True, timeout=5)
        self.client.stop()


@pytest.fixture
def devices(broker, tmp_path, keys):
    made = []

    def make(device_id, groups=(), validator=None):
        dev = Device(broker, tmp_path, device_id, keys[1], groups, validator)
        made.append(dev)
        return dev

    yield make
    for dev in made:
        dev.close()


def pack_release(tmp_path, keys, version="1.0.0", name="mobilenet", real=False):
    src = tmp_path / f"src-{version}"
    src.mkdir()
    if real and (SHARED / "models/mobilenet_v1_0.25_128_quant_edgetpu.tflite").is_file():
        for f in (
            "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
            "mobilenet_v1_0.25_128_quant.tflite",
        ):
            shutil.copy(SHARED / "models" / f, src / f)
        model, cpu = (
            src / "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
            src / "mobilenet_v1_0.25_128_quant.tflite",
        )
    else:
        model, cpu = src / "model_edgetpu.tflite", src / "model.tflite"
        model.write_bytes(fake_tflite(50_000, seed=1))
        cpu.write_bytes(fake_tflite(40_000, seed=2))
    (src / "labels.txt").write_text("background\ncat\n")
    return operator.pack(
        tmp_path / f"release-{version}",
        name=name,
        version=version,
        model=model,
        cpu_model=cpu,
        labels=src / "labels.txt",
        task="classification",
        adapter={"top_k": 3, "threshold": 0.1},
        private_key=keys[0],
    )


# ------------------------------------------------------------------ keygen / pack


def test_keygen_writes_private_key_0600(keys):
    private, public, kid = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes()
    assert len(kid) == 16
    assert TrustedKeys.from_paths([public]).ids == (kid,)
    with pytest.raises(ModelUpdateError) as e:
        operator.keygen(private, public)
    assert e.value.reason == "exists"


def test_keygen_writes_both_files_or_neither(tmp_path):
    taken = tmp_path / "taken.pub"
    taken.write_text("someone's public key\n")
    private = tmp_path / "new.key"
    with pytest.raises(ModelUpdateError) as e:
        operator.keygen(private, taken)
    assert e.value.reason == "exists"
    assert not private.exists()  # no private key left without its public half
    assert taken.read_text() == "someone's public key\n"
    # One path for both halves: the public key would replace the private one it
    # reported as written (with --force), or leave half a pair (without).
    for overwrite in (False, True):
        same = tmp_path / f"same-{overwrite}.pem"
        with pytest.raises(ModelUpdateError) as e:
            operator.keygen(same, tmp_path / "." / same.name, overwrite=overwrite)
        assert e.value.reason == "same_file" and str(same) in str(e.value)
        assert not same.exists()


def test_pack_then_verify(tmp_path, keys):
    rel = pack_release(tmp_path, keys, real=True)
    manifest = operator.verify(rel, [keys[1]])
    assert manifest.label == "mobilenet@1.0.0"
    assert {f.role for f in manifest.files} == {"model", "cpu_model", "labels"}
    assert sorted(p.name for p in rel.iterdir()) == sorted(
        [f.name for f in manifest.files] + ["manifest.json"]
    )
    assert operator.verify(rel / "manifest.json", [keys[1]]).label == manifest.label
    (rel / "labels.txt").write_text("background\ndog\n")  # same size, other bytes
    with pytest.raises(ModelUpdateError) as e:
        operator.verify(rel, [keys[1]])
    assert e.value.reason == "sha256_mismatch"
    other = tmp_path / "other"
    other.mkdir()
    operator.keygen(other / "k", other / "k.pub")
    with pytest.raises(ModelUpdateError) as e:
        operator.verify(rel / "manifest.json", [other / "k.pub"])
    assert e.value.reason == "untrusted_key"


def test_pack_rejects_bad_inputs(tmp_path, keys):
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "m.tflite").write_bytes(fake_tflite())
    with pytest.raises(ModelUpdateError) as e:
        operator.pack(
            tmp_path / "r1",
            name="x",
            version="1.0.0",
            model=tmp_path / "notes.txt",
            private_key=keys[0],
        )
    assert e.value.reason == "not_tflite"
    with pytest.raises(ModelUpdateError) as e:
        operator.pack(
            tmp_path / "r2",
            name="x/y",
            version="1.0.0",
            model=tmp_path / "m.tflite",
            private_key=keys[0],
        )
    assert e.value.reason == "bad_manifest"
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
    operator.pack(
        tmp_path / "r3", name="x", version=3, model=tmp_path / "m.tflite", private_key=keys[0]
    )
    with pytest.raises(ModelUpdateError) as e:
        operator.pack(
            tmp_path / "r3", name="x", version=4, model=tmp_path / "m.tflite", private_key=keys[0]
        )
    assert e.value.reason == "exists"


def test_a_model_replaced_while_it_is_packed_gives_a_release_that_verifies(
    tmp_path, keys, monkeypatch
):
    """An exporter replacing the model (write, rename) as pack reads it: the manifest
    must describe the bytes the release holds, or every device refuses it."""
    model = tmp_path / "m.tflite"
    model.write_bytes(fake_tflite(seed=1))
    newer = tmp_path / "newer.tflite"
    newer.write_bytes(fake_tflite(seed=2))
    real_open = open
    opened = []

    def open_then_replace(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        if os.fspath(path) == os.fspath(model) and not opened:
            opened.append(path)
            os.replace(newer, model)  # the open handle keeps the old file
        return handle

    monkeypatch.setattr("builtins.open", open_then_replace)
    rel = operator.pack(tmp_path / "rel", name="x", version=1, model=model, private_key=keys[0])
    monkeypatch.undo()
    assert opened, "the model was never opened"
    manifest = operator.verify(rel, [keys[1]])
    assert (rel / "m.tflite").read_bytes() == fake_tflite(seed=1)
    assert [f.size for f in manifest.files] == [len(fake_tflite(seed=1))]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------- push


def collect():
    seen = []
    return seen, lambda device, state: seen.append((device, dict(state)))


def finals(seen):
    out = {}
    for device, state in seen:
        out[device] = state["state"]
    return out


def test_push_to_devices_through_the_lab_server(broker, tmp_path, keys, devices):
    rel = pack_release(tmp_path, keys, real=True)
    cams = [devices("cam-1"), devices("cam-2")]
    seen, report = collect()
    code = push(
        rel, broker=broker, prefix=PREFIX, devices=["cam-1", "cam-2"],
        serve=ServeSettings(host="127.0.0.1", port=0), timeout=30, report=report,
        public_keys=[str(keys[1])],
    )  # fmt: skip
    assert code == 0
    assert finals(seen) == {"cam-1": "active", "cam-2": "active"}
    assert {s["state"] for _, s in seen} >= {"downloading", "verifying", "installing", "active"}
    for cam in cams:
        active = cam.store.active(verify=True)
        assert active.label == "mobilenet@1.0.0"
        assert active.manifest.adapter == {"top_k": 3, "threshold": 0.1}


def test_push_to_a_group_discovers_members(broker, tmp_path, keys, devices):
    rel = pack_release(tmp_path, keys)
    lobby = [devices("lobby-1", ["lobby"]), devices("lobby-2", ["lobby", "north"])]
    garage = devices("garage-1", ["garage"])
    seen, report = collect()
    code = push(
        rel, broker=broker, prefix=PREFIX, group="lobby",
        serve=ServeSettings(host="127.0.0.1", port=0), timeout=30, report=report,
    )  # fmt: skip
    assert code == 0
    assert finals(seen) == {"lobby-1": "active", "lobby-2": "active"}
    assert all(d.store.active().version == "1.0.0" for d in lobby)
    assert garage.store.active() is None and garage.commands == []
    assert lobby[0].commands == [f"{PREFIX}/group/lobby/cmd/model/update"]


def test_canary_failure_halts_the_rollout(broker, tmp_path, keys, devices):
    rel = pack_release(tmp_path, keys)

    def no_tpu(path, manifest):
        raise ModelUpdateError("incompatible", "edgetpu model and no Edge TPU here")

    canary = devices("c-1", ["fleet"], validator=no_tpu)
    rest = [devices("c-2", ["fleet"]), devices("c-3", ["fleet"])]
    seen, report = collect()
    code = push(
        rel, broker=broker, prefix=PREFIX, group="fleet", canary=1,
        serve=ServeSettings(host="127.0.0.1", port=0), timeout=30, report=report,
    )  # fmt: skip
    assert code == 1
    assert finals(seen) == {"c-1": "failed", "c-2": "skipped", "c-3": "skipped"}
    failed = [s for d, s in seen if d == "c-1" and s["state"] == "failed"][0]
    assert failed["reason"] == "incompatible"
    assert canary.commands == [f"{PREFIX}/c-1/cmd/model/update"]
    assert all(d.commands == [] and d.store.active() is None for d in rest)


def test_canary_success_continues_to_the_rest(broker, tmp_path, keys, devices):
    rel = pack_release(tmp_path, keys)
    devs = [devices(f"s-{i}") for i in range(3)]
    seen, report = collect()
    code = push(
        rel, broker=broker, prefix=PREFIX, devices=[d.id for d in devs], canary=1,
        serve=ServeSettings(host="127.0.0.1", port=0), timeout=30, report=report,
    )  # fmt: skip
    assert code == 0
    assert all(d.store.active().version == "1.0.0" for d in devs)
    first_active = [d for d, s in seen if s["state"] == "active"][0]
    assert first_active == "s-0"


def test_push_with_external_base_url_twice_ends_already_active(broker, tmp_path, keys, devices):
    rel = pack_release(tmp_path, keys)
    dev = devices("ext-1")
    with FileServer() as server:
        for f in rel.iterdir():
            server.add(f"/releases/{f.name}", f.read_bytes())
        base = server.url("/releases/")
        assert (
            push(rel, broker=broker, prefix=PREFIX, devices=["ext-1"], base_url=base, timeout=30)
            == 0
        )
        seen, report = collect()
        again = push(
            rel,
            broker=broker,
            prefix=PREFIX,
            devices=["ext-1"],
            base_url=base,
            timeout=30,
            report=report,
        )
    # The same release again is no replay and no failure: the release is active.
    assert again == 0
    assert (seen[-1][1]["state"], seen[-1][1]["reason"]) == ("active", "already_active")
    assert dev.store.active().version == "1.0.0"


def test_push_times_out_for_silent_devices(broker, tmp_path, keys):
    rel = pack_release(tmp_path, keys)
    seen, report = collect()
    start = time.monotonic()
    code = push(
        rel, broker=broker, prefix=PREFIX, devices=["ghost"], base_url="https://x.invalid/",
        timeout=1.0, report=report,
    )  # fmt: skip
    assert code == 1 and seen == [
        ("ghost", {"state": "timeout", "request_id": seen[0][1]["request_id"]})
    ]
    assert time.monotonic() - start < 10


def test_push_to_an_empty_group_fails(broker, tmp_path, keys):
    rel = pack_release(tmp_path, keys)
    with pytest.raises(ModelUpdateError) as e:
        push(
            rel,
            broker=broker,
            prefix=PREFIX,
            group="nobody",
            base_url="https://x/",
            discover_seconds=0.5,
        )
    assert e.value.reason == "no_devices"
