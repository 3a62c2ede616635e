"""Chaos: a release server that trickles one byte a second, against the running daemon.

A socket timeout bounds one ``recv`` only, so a server that trickles bytes used to keep
an update ``downloading`` forever: the state never ended, later commands went
unanswered and SIGTERM waited for a worker that never stopped. Here the daemon runs as a
subprocess on the demo detector; releases are served by a loopback server whose model
file trickles (body, or status line and headers, at 1 B/s). Promises checked:

* a trickling update ends ``failed``/``timeout`` within ``updates.update_timeout`` + 1 s
  of the command, body and headers alike, while the old model keeps publishing results;
* the next command is answered (a normal release then installs and serves);
* SIGTERM during a trickling download exits promptly (no worker left behind);
* that interrupted request ends ``failed``/``interrupted``, under its request id, once:
  at the stop (the model topic is durable), not again when the daemon starts again.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.broker import MqttSubscriber, wait_until
from tests.support.chaos import DEMO, DemoReleases, figure
from tests.support.daemon import DaemonProcess
from tests.support.updates_e2e import (
    TERMINAL,
    Operator,
    states_of,
    wait_terminal,
    write_public_key,
)
from tests.support.updates_http import FileServer, Route

UPDATE_TIMEOUT = 6.0
SLACK = 1.0  # the promise: limit + 1 s
LIMITS = {
    "download_timeout": 3.0,
    "retries": 1,
    "attempt_timeout": 4.0,
    "update_timeout": UPDATE_TIMEOUT,
    "min_rate_bytes": 64,
    "min_rate_window": 3.0,
}

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]


class Lab:
    """One release server, signed demo releases, and daemons on one state dir."""

    def __init__(self, tmp_path: Path, broker, server: FileServer):
        self.broker, self.server = broker, server
        key = Ed25519PrivateKey.generate()
        self.pub = write_public_key(key, tmp_path / "trusted.pub")
        self.releases = DemoReleases(tmp_path / "releases", key)
        self.workdir = tmp_path / "daemon"
        self.workdir.mkdir()
        self.operator = Operator(broker.host, broker.port)

    def daemon(self, **limits) -> DaemonProcess:
        """A daemon on the demo model whose updates use ``limits``."""
        return DaemonProcess(
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
                **limits,
            },
        )

    def send(self, daemon: DaemonProcess, version: str, rid: str, **model_route) -> float:
        """Serve a release (the model file with ``model_route`` options); send its command."""
        rel = self.releases.make(version)
        base = f"/{self.releases.name}/{version}/"
        for name, data in rel.files.items():
            options = model_route if name.endswith(".tflite") else {}
            self.server.add(base + name, Route(body=data, **options))
        sent = time.monotonic()
        self.operator.update(
            daemon.topics.base, rel.envelope, self.server.url(base), request_id=rid
        )
        return sent


def results_from(sub: MqttSubscriber, topic: str, start: int) -> list[tuple[str, str]]:
    """(model name, version) of every result from message index ``start`` on."""
    return [
        (m.json()["model"]["name"], str(m.json()["model"]["version"]))
        for m in sub.on(topic)[start:]
    ]


def test_trickling_updates_time_out_while_the_old_model_serves(tmp_path, mqtt_broker):
    with FileServer() as server:
        lab = Lab(tmp_path, mqtt_broker, server)
        daemon = lab.daemon(**LIMITS)
        topics = daemon.topics
        sub = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [topics.results, topics.model])
        sub.start()
        try:
            daemon.start()
            wait_until(lambda: sub.on(topics.results), 30, "first result")
            figures = {}
            for rid, route in (
                ("trickle-body", {"trickle": 1.0}),
                ("trickle-head", {"trickle_head": 1.0}),
            ):
                before = len(sub.on(topics.results))
                sent = lab.send(daemon, "2.0.0", rid, **route)
                final = wait_terminal(sub, topics.model, rid, timeout=60)
                took = time.monotonic() - sent
                figures[rid.replace("-", "_") + "_s"] = took
                assert (final["state"], final["reason"]) == ("failed", "timeout"), final
                assert took <= UPDATE_TIMEOUT + SLACK, (rid, took, final)
                served = results_from(sub, topics.results, before)
                assert served, f"{rid}: no results while the update was trickling"
                assert set(served) == {("color_blobs", "")}, served
                assert final["serving"]["name"] == "color_blobs", final

            # The next command is answered: a release served normally installs and serves.
            sent = lab.send(daemon, "2.0.0", "after-trickle")
            final = wait_terminal(sub, topics.model, "after-trickle", timeout=90)
            figures["next_command_active_s"] = time.monotonic() - sent
            assert final["state"] == "active", final
            mark = len(sub.on(topics.results))
            wait_until(
                lambda: ("blobs", "2.0.0") in results_from(sub, topics.results, mark),
                30,
                "a result from the new release",
            )

            lab.send(daemon, "3.0.0", "stopped-mid-trickle", trickle=1.0)
            wait_until(
                lambda: (
                    "downloading"
                    in [s["state"] for s in states_of(sub, topics.model, "stopped-mid-trickle")]
                ),
                30,
                "the trickling download to start",
            )
            time.sleep(1.0)  # the reader is now blocked on a trickling socket
            stopping = time.monotonic()
            assert daemon.stop(signal.SIGTERM, timeout=30) == 0, daemon.log_tail()
            figures["sigterm_exit_s"] = time.monotonic() - stopping
            assert "did not stop" not in daemon.log(), daemon.log_tail()
            assert figures["sigterm_exit_s"] <= 5.0, figures
        except BaseException:
            print(f"---- daemon log ----\n{daemon.log_tail(8000)}")
            raise
        finally:
            daemon.kill_group()
            sub.stop()
            lab.operator.close()
    figure("trickle_updates", limit_s=UPDATE_TIMEOUT, **figures)


def test_update_interrupted_by_sigterm_ends_failed_once(tmp_path, mqtt_broker):
    # Long limits: only the SIGTERM may end this download.
    slow = {
        "download_timeout": 30.0,
        "retries": 1,
        "attempt_timeout": 60.0,
        "update_timeout": 300.0,
        "min_rate_bytes": 0,
    }
    with FileServer() as server:
        lab = Lab(tmp_path, mqtt_broker, server)
        first = lab.daemon(**slow)
        topics = first.topics
        sub = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [topics.results, topics.model])
        sub.start()
        second = None
        try:
            first.start()
            wait_until(lambda: sub.on(topics.results), 30, "first result")
            rid = "interrupted-1"
            lab.send(first, "2.0.0", rid, trickle=1.0)
            wait_until(
                lambda: "downloading" in [s["state"] for s in states_of(sub, topics.model, rid)],
                30,
                "the download to start",
            )
            time.sleep(1.0)
            stopping = time.monotonic()
            assert first.stop(signal.SIGTERM, timeout=30) == 0, first.log_tail()
            exit_s = time.monotonic() - stopping
            wait_terminal(sub, topics.model, rid, 10)  # published at the stop
            finals = [s for s in states_of(sub, topics.model, rid) if s["state"] in TERMINAL]
            assert [(s["state"], s["reason"]) for s in finals] == [("failed", "interrupted")]
            state = finals[0]
            assert (state["name"], state["version"]) == ("blobs", "2.0.0"), state
            assert state["serving"]["name"] == "color_blobs", state
            # Retained, so an operator connecting later still gets the answer.
            retained = MqttSubscriber(mqtt_broker.host, mqtt_broker.port, [topics.model]).start()
            try:
                doc = retained.wait_for(topics.model, timeout=10).json()
            finally:
                retained.stop()
            assert (doc["request_id"], doc["reason"]) == (rid, "interrupted"), doc
            assert not (lab.workdir / "state" / "update-request.json").exists()

            second = lab.daemon(**slow)
            restarted = time.monotonic()
            second.start()
            mark = len(sub.on(topics.results))
            wait_until(lambda: len(sub.on(topics.results)) > mark, 30, "results after restart")
            answered_s = time.monotonic() - restarted
            # Answered at the stop: the restart does not answer it a second time.
            again = [s for s in states_of(sub, topics.model, rid) if s["state"] in TERMINAL]
            assert len(again) == 1, again
        except BaseException:
            for d in (first, second):
                if d is not None:
                    print(f"---- daemon log ----\n{d.log_tail(6000)}")
            raise
        finally:
            for d in (first, second):
                if d is not None:
                    d.kill_group()
            sub.stop()
            lab.operator.close()
    figure("interrupted_update", sigterm_exit_s=exit_s, restart_to_results_s=answered_s)
