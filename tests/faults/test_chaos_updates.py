"""Chaos: 50 model updates, each cut short by SIGKILL at a random point.

The daemon runs the demo detector from its config; updates are signed releases of the
same detector (name ``blobs``, a new version every cycle) served by a loopback HTTP
server that throttles the model file, so the download is a real part of the timeline.
A first, uninterrupted update measures when the download ends and when the update is
``active``; then each cycle sends an update command, waits a random delay (uniform within
the download on even cycles, within the rest of the timeline on odd ones, so kills land
in the download, the verification and validation, the install, the hot swap and its
health check, or just after), and SIGKILLs the daemon's main process, as the OOM
killer or a watchdog would; its forkserver and worker must exit by themselves (counted
as orphans otherwise).

After every kill: every installed release directory under ``state/models/<name>/<version>``
matches its manifest's sizes and SHA-256 and the ``active`` pointer names one of them.
After every restart: the daemon publishes results, from the old or the new model only,
namely the one the pointer names after startup recovery, running the file from that
release's directory; a release the pointer marked ``trial`` at the kill (switched to but
not yet found healthy) must have been abandoned for the old one.
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.updates.commands import build_update_command
from tests.support.broker import MqttSubscriber, wait_until
from tests.support.chaos import (
    DEMO,
    DemoReleases,
    active_release,
    figure,
    read_pointer,
    store_problems,
)
from tests.support.chaos_procs import live, process_tree
from tests.support.daemon import DaemonProcess
from tests.support.updates_http import FileServer, Route

KILLS = 50
THROTTLE_S = 0.04  # per 8 KiB: the 117 KiB model downloads in about 0.6 s
CONFIGURED = ("color_blobs", "")

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


class Harness:
    """One broker, one release server, and the daemon restarted on the same state dir."""

    def __init__(self, tmp_path: Path, broker, server: FileServer):
        self.tmp, self.broker, self.server = tmp_path, broker, server
        key = Ed25519PrivateKey.generate()
        pub = tmp_path / "trusted.pub"
        pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.releases = DemoReleases(tmp_path / "releases", key)
        self.workdir = tmp_path / "daemon"
        self.workdir.mkdir()
        self.models = self.workdir / "state" / "models"
        self.pub = pub
        self.daemon: DaemonProcess | None = None
        self.sub: MqttSubscriber | None = None
        self.topics = None

    def start(self) -> float:
        """(Re)start the daemon on the same workdir; returns the wall-clock start time."""
        self.daemon = DaemonProcess(
            self.workdir,
            self.broker.port,
            DEMO / "clip.avi",
            DEMO / "color_blobs.tflite",
            DEMO / "labels.txt",
            mqtt={"publish_every_frame": True},
            updates={
                "enabled": True,
                "trusted_keys": [str(self.pub)],
                "allow_http": True,
                "allowed_hosts": ["127.0.0.1"],
                "health_frames": 5,
                "keep_versions": 2,
                "download_timeout": 5.0,
                "retries": 1,
            },
        )
        if self.sub is None:
            self.topics = self.daemon.topics
            self.sub = MqttSubscriber(
                self.broker.host, self.broker.port, [self.topics.results, self.topics.model]
            ).start()
        started = time.time()
        self.daemon.start()
        return started

    def served_after(self, wall: float, timeout: float = 20.0) -> dict:
        """The model of a result captured after ``wall`` (spool replays are older)."""

        def fresh() -> dict | None:
            assert self.daemon.alive(), f"daemon exited:\n{self.daemon.log_tail()}"
            for m in reversed(self.sub.on(self.topics.results)):
                doc = m.json()
                if doc["timestamp"] > wall:
                    return doc["model"]
            return None

        return wait_until(fresh, timeout, "a result from the restarted daemon")

    def send_update(self, version: str, request_id: str) -> None:
        """Publish the release on the server and send the update command."""
        rel = self.releases.make(version)
        base = f"/{self.releases.name}/{version}/"
        for name, data in rel.files.items():
            self.server.add(base + name, Route(body=data, throttle=THROTTLE_S))
        payload = build_update_command(
            envelope=rel.envelope, base_url=self.server.url(base), request_id=request_id
        )
        self.sub._client.publish(f"{self.topics.base}/cmd/model/update", payload, qos=1)

    def states(self, request_id: str) -> list[str]:
        """Model-update states reported for one request so far."""
        out = []
        for m in self.sub.on(self.topics.model):
            doc = m.json()
            if doc.get("request_id") == request_id:
                out.append(doc["state"])
        return out

    def kill(self) -> int:
        """SIGKILL the daemon's main process; its workers must follow by themselves.

        Returns:
            How many of its processes were still alive 5 s later (then killed).
        """
        tree = process_tree(self.daemon.pid)
        os.kill(self.daemon.pid, signal.SIGKILL)
        self.daemon.proc.wait(5)
        deadline = time.monotonic() + 5.0
        while (left := live(tree)) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.daemon.kill_group()
        return len(left)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.kill_group()
        if self.sub is not None:
            self.sub.stop()


def phase(states: list[str], log: str, version: str) -> str:
    """Where an update was when the daemon was killed."""
    last = states[-1] if states else ""
    if last == "installing":
        # The daemon logs each adopted model as 'model {"model_path": ..., "version": ...}'.
        swapped = re.search(r'model \{"model_path"[^\n]*"version": "' + re.escape(version), log)
        return "swap/health" if swapped else "install"
    return {"": "queued", "downloading": "download", "verifying": "verify/validate"}.get(last, last)


def test_fifty_updates_killed_at_random_points(tmp_path, mqtt_broker):
    rng = random.Random(7)
    with FileServer() as server:
        h = Harness(tmp_path, mqtt_broker, server)
        try:
            started = h.start()
            assert h.served_after(started)["name"] == CONFIGURED[0]

            # Calibration: one update, uninterrupted, measures when its download ends and
            # when it is active; kills alternate between the two halves of that timeline.
            sent = time.monotonic()
            h.send_update("1.0.0", "r0")
            wait_until(lambda: "verifying" in h.states("r0"), 30, "calibration download")
            downloaded = time.monotonic() - sent
            wait_until(lambda: "active" in h.states("r0"), 30, "calibration update active")
            span = time.monotonic() - sent
            served = (h.served_after(time.time())["name"], "1.0.0")
            assert served == ("blobs", "1.0.0"), served
            windows = [(0.0, downloaded), (downloaded, span * 1.15)]

            phases: collections.Counter[str] = collections.Counter()
            outcomes: collections.Counter[str] = collections.Counter()
            restart_s, orphans, trials = [], 0, 0
            for cycle in range(1, KILLS + 1):
                old, version, rid = served, f"1.{cycle}.0", f"r{cycle}"
                mark = len(h.daemon.log())
                h.send_update(version, rid)
                sent = time.monotonic()
                h.daemon.wait_log(r"command model/update", timeout=5, after=mark)
                delay = rng.uniform(*windows[cycle % 2])
                time.sleep(max(0.0, sent + delay - time.monotonic()))
                orphans += h.kill()
                phases[phase(h.states(rid), h.daemon.log()[mark:], version)] += 1

                problems = store_problems(h.models)
                assert problems == [], f"cycle {cycle}, after the kill: {problems}"
                at_kill = read_pointer(h.models)
                started = h.start()
                model = h.served_after(started)
                restart_s.append(time.time() - started)
                now = (model["name"], model["version"])
                assert now in (old, ("blobs", version)), f"cycle {cycle}: serving {now}"
                pointer = active_release(h.models)  # after startup recovery
                assert now == (pointer or CONFIGURED), f"cycle {cycle}: {now} vs pointer {pointer}"
                if at_kill and at_kill.get("trial"):
                    trials += 1
                    assert now == old, f"cycle {cycle}: kept {now}, which was on trial"
                if pointer:
                    assert Path(model["file"]).parent == h.models / now[0] / now[1]
                assert store_problems(h.models) == []
                assert not list(h.models.glob(".staging/*")), "startup left staging dirs"
                outcomes["new" if now != old else "old"] += 1
                served = now
            assert h.daemon.stop(timeout=15) == 0
        except BaseException:
            print(f"---- daemon log ----\n{h.daemon.log_tail(8000) if h.daemon else ''}")
            raise
        finally:
            h.stop()

    figure(
        "update_kills",
        kills=KILLS,
        update_span_s=span,
        **{f"killed_in_{k.replace('/', '_')}": v for k, v in sorted(phases.items())},
        restarted_on_old=outcomes["old"],
        restarted_on_new=outcomes["new"],
        killed_on_trial=trials,
        corrupt=0,
        orphans_left=orphans,
        restart_to_result_max_s=max(restart_s),
    )
    assert outcomes["old"] and outcomes["new"], "kills did not spread across the update"
    assert orphans == 0, "worker processes outlived the SIGKILLed daemon"
