"""Helpers shared by the model-update end-to-end tests (this module holds no tests).

The tests drive a real ``edge-agent run`` subprocess (tests/support/daemon.py) through a
real mosquitto: releases are packed with the operator's own ``pack`` (or forged with
tests/support/updates_release.py), served by the loopback HTTP server of
tests/support/updates_http.py, and announced by publishing the update command the way
``edge-agent model push`` does. What the daemon does is read back from MQTT only: its
results, and the retained ``model`` state topic.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.tools.release.operator import pack
from edge_agent.updates.commands import build_update_command
from tests.support.broker import Message, MqttSubscriber
from tests.support.paths import REPO
from tests.support.updates_http import FileServer, Route

DEMO = REPO / "models" / "demo"
TERMINAL = ("active", "failed", "rolled_back")
FLOOR = 60  # darkest value of write_bright_clip; JPEG keeps it far above 0


def write_public_key(key: Ed25519PrivateKey, path: Path) -> Path:
    """Write the PEM public key a device lists in ``updates.trusted_keys``."""
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def updates_config(public_key: Path, **overrides: Any) -> dict[str, Any]:
    """An ``[updates]`` table for a lab device: http from loopback, fast failures."""
    table = {
        "enabled": True,
        "trusted_keys": [str(public_key)],
        "allow_http": True,
        "allowed_hosts": ["127.0.0.1"],
        "health_frames": 10,
        "download_timeout": 5.0,
        "retries": 1,
        "keep_versions": 3,
    }
    table.update(overrides)
    return table


def pack_release(
    root: Path,
    key: Ed25519PrivateKey,
    name: str,
    version: str,
    model: Path,
    **options: Any,
) -> Path:
    """A signed release made by the operator tooling, in ``root/name/version``."""
    return pack(
        root / name / version, name=name, version=version, model=model, private_key=key, **options
    )


def serve_dir(
    server: FileServer, release_dir: Path, prefix: str = "/r", *, throttle: float = 0.0
) -> str:
    """Serve every file of a release directory; returns the base URL devices use.

    Args:
        throttle: seconds between 8 KiB chunks of the model files (slow downloads).
    """
    base = f"{prefix}/{release_dir.parent.name}/{release_dir.name}/"
    for path in sorted(release_dir.iterdir()):
        slow = throttle if path.suffix == ".tflite" else 0.0
        server.add(base + path.name, Route(body=path.read_bytes(), throttle=slow))
    return server.url(base)


def envelope_of(release_dir: Path) -> dict[str, Any]:
    """The signed envelope (``manifest.json``) of a release directory."""
    return json.loads((release_dir / "manifest.json").read_bytes())


class Operator:
    """The operator's MQTT client: publishes commands at QoS 1 and waits for the ack."""

    def __init__(self, host: str, port: int):
        self._client = MqttSubscriber(host, port, (), name="e2e-operator").start()

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish and wait until the broker acknowledged it."""
        self._client.publish(topic, payload, qos=1)

    def update(self, base_topic: str, envelope: Mapping[str, Any], base_url: str, **kw: Any) -> str:
        """Send ``model/update`` to ``{base_topic}/cmd/model/update``; returns the request id."""
        rid = kw.pop("request_id", None) or f"e2e-{uuid.uuid4().hex[:10]}"
        payload = build_update_command(envelope=envelope, base_url=base_url, request_id=rid, **kw)
        self.publish(f"{base_topic}/cmd/model/update", payload)
        return rid

    def rollback(self, base_topic: str, request_id: str) -> str:
        """Send ``model/rollback``; returns the request id."""
        self.publish(
            f"{base_topic}/cmd/model/rollback", json.dumps({"request_id": request_id}).encode()
        )
        return request_id

    def close(self) -> None:
        """Disconnect."""
        self._client.stop()


def retained(broker: Any, topic: str, timeout: float = 5.0) -> dict[str, Any]:
    """The retained JSON document a subscriber connecting now is given on ``topic``."""
    sub = MqttSubscriber(broker.host, broker.port, [topic]).start()
    try:
        msg = sub.wait_for(topic, timeout=timeout)
    finally:
        sub.stop()
    assert msg.retain, f"{topic}: {msg.payload!r} was not delivered as retained"
    return msg.json()


def payloads(sub: MqttSubscriber, topic: str, start: int = 0) -> list[dict[str, Any]]:
    """JSON payloads received on ``topic``, from the ``start``-th message on."""
    return [m.json() for m in sub.on(topic)[start:]]


def states_of(sub: MqttSubscriber, model_topic: str, rid: str) -> list[dict[str, Any]]:
    """Every model state published for one request, in order."""
    return [s for s in payloads(sub, model_topic) if s.get("request_id") == rid]


def wait_terminal(
    sub: MqttSubscriber, model_topic: str, rid: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The terminal state (active, failed, rolled_back) of one request."""
    msg = sub.wait_for(
        model_topic,
        lambda m: _doc(m).get("request_id") == rid and _doc(m).get("state") in TERMINAL,
        timeout=timeout,
    )
    return msg.json()


def _doc(msg: Message) -> dict[str, Any]:
    """A message's JSON object, or {} (never raises inside a wait predicate)."""
    try:
        doc = json.loads(msg.payload)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def wait_results(
    sub: MqttSubscriber,
    results_topic: str,
    count: int,
    *,
    after: int = 0,
    where: Callable[[dict[str, Any]], bool] = lambda r: True,
    timeout: float = 20.0,
    daemon: Any = None,
) -> list[dict[str, Any]]:
    """Wait for ``count`` results (from message index ``after`` on) matching ``where``.

    Fails at once, with the log, when ``daemon`` (a DaemonProcess) has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = [r for r in payloads(sub, results_topic, after) if where(r)]
        if len(got) >= count:
            return got
        if daemon is not None and not daemon.alive():
            raise AssertionError(f"daemon exited:\n{daemon.log_tail()}")
        assert time.monotonic() < deadline, (
            f"{len(got)} of {count} matching results on {results_topic} in {timeout}s"
        )
        time.sleep(0.05)


def version_of(result: Mapping[str, Any]) -> tuple[str, str]:
    """(name, version) of the model a result came from."""
    return result["model"]["name"], str(result["model"]["version"])


def group_processes(pgid: int) -> list[int]:
    """Live processes of a process group (the daemon, its forkserver and workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids)


def contiguous_around(ids: list[int], index: int, span: int) -> list[int]:
    """The frame ids from ``index - span`` to ``index + span`` (for failure messages)."""
    return ids[max(0, index - span) : index + span + 1]


def gaps(ids: Iterable[int]) -> list[tuple[int, int]]:
    """(before, after) pairs where consecutive ids are not consecutive integers."""
    ids = list(ids)
    return [(a, b) for a, b in zip(ids, ids[1:]) if b != a + 1]


def write_bright_clip(path: Path, frames: int = 30, fps: float = 15.0) -> Path:
    """A 320x240 MJPG clip of a blue square over a grey-green ramp, no dark pixel."""
    width, height = 320, 240
    ramp = np.linspace(FLOOR + 20, 200, width, dtype=np.float32).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    try:
        for i in range(frames):
            frame = np.empty((height, width, 3), np.uint8)
            frame[:, :, 0] = 150
            frame[:, :, 1] = ramp
            frame[:, :, 2] = 110
            x = (i * 8) % (width - 80)
            frame[80:160, x : x + 80] = (230, FLOOR, FLOOR)  # BGR: blue
            writer.write(frame)
    finally:
        writer.release()
    return path
