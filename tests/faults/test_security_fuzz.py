"""Security: every field of an incoming model command is validated (property-based).

The payloads come from tests/support/command_payloads.py (hypothesis): random bytes,
invalid UTF-8, payloads beyond the 256 KiB cap, JSON nested thousands deep, wrong types
in every field, traversal in file names, forbidden URL schemes and hosts, manifests
unsigned, tampered, foreign-signed or validly signed with a bad field.

In-process (>= 10,000 payloads, seconds): the daemon's command path from the MQTT
callback on, ``UpdateService.handle`` -> ``UpdateRunner`` thread -> ``UpdateInstaller``,
with a stand-in publisher that encodes each state exactly as ``MqttPublisher`` does.
Through the real broker (200 payloads): the operator account publishes to the running
daemon and the rejection arrives on its retained ``model`` topic. Every payload must end
in exactly one ``failed`` state with a known reason and a bounded message; nothing may
escape (thread excepthook, logged tracebacks, ``internal_error``), no log line may be
split by attacker text, nothing may be installed, and the daemon keeps running.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from edge_agent.config import parse_config
from edge_agent.daemon.model_updates import UpdateService
from edge_agent.daemon.options import model_options
from edge_agent.publishing.settings import encode_payload
from tests.faults.conftest import DEMO, GROUP
from tests.support.command_payloads import payload_strategy
from tests.support.daemon import DEVICE_ID, PREFIX, to_toml

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

IN_PROCESS_PAYLOADS = 10_000
BROKER_PAYLOADS = 200
TERMINAL = ("failed", "active", "rolled_back")
# Every reason a rejected command may carry (edge_agent/updates/*).
REASONS = {
    "bad_command", "bad_manifest", "bad_url", "insecure_url", "host_not_allowed",
    "unsigned", "bad_signature", "untrusted_key", "unsupported_format", "agent_too_old",
    "too_large", "no_previous", "http_error", "tls_error", "timeout", "truncated",
    "no_space", "corrupt", "not_tflite",
}  # fmt: skip
MAX_MESSAGE = 1024  # a rejection explains itself; it does not echo a 256 KiB payload

# ------------------------------------------------------------------------ checking


class StateRecorder:
    """Stands in for ``MqttPublisher.publish_model``: encodes each state as it would."""

    def __init__(self, topic: str):
        self.topic = topic
        self.states: list[dict] = []
        self.unencodable: list[str] = []
        self._cond = threading.Condition()

    def publish_model(self, state: dict) -> None:
        try:
            doc = json.loads(encode_payload(self.topic, state))
        except Exception as exc:  # the real publisher would raise PublishError here
            self.unencodable.append(f"{exc!r} for {state!r:.200}")
            raise
        with self._cond:
            self.states.append(doc)
            self._cond.notify_all()

    def wait_terminal(self, start: int, timeout: float = 20.0) -> dict:
        """The first terminal state at index >= start."""

        def find():
            return next((s for s in self.states[start:] if s["state"] in TERMINAL), None)

        with self._cond:
            found = self._cond.wait_for(find, timeout)
        assert found, f"no terminal state within {timeout}s; got {self.states[start:]}"
        return found


class Problems(logging.Handler):
    """Collects what must never happen: tracebacks in the log, exceptions in threads."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.found: list[str] = []
        self.lines = self.longest = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.lines += 1
        self.longest = max(self.longest, len(text))
        if record.exc_info:
            self.found.append(f"{record.name}: {text[:200]} ({record.exc_info[1]!r})")
        if "\n" in text or "\r" in text:  # one forged line is enough to mislead a reader
            self.found.append(f"{record.name}: line break in a log message: {text[:200]!r}")

    def excepthook(self, args: threading.ExceptHookArgs) -> None:
        self.found.append(f"thread {args.thread.name}: {args.exc_value!r}")


RID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def check_state(state: dict, request_id_sent: Any) -> None:
    """One rejection: failed, a known reason, a bounded message, no invented fields."""
    assert state["state"] == "failed", state
    assert state["reason"] in REASONS, state
    assert isinstance(state["message"], str) and state["message"], state
    assert len(state["message"]) <= MAX_MESSAGE, (len(state["message"]), state["message"][:200])
    rid = state["request_id"]
    assert rid is None or (RID.fullmatch(rid) and rid == request_id_sent), state
    for key in ("name", "version"):
        assert state[key] is None or isinstance(state[key], str), state


def sent_request_id(payload: bytes) -> Any:
    """The request_id a payload carries, if it parses at all."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return obj.get("request_id") if isinstance(obj, dict) else None


def fuzz_config(tmp_path: Path, trusted_pub: Path):
    """A daemon config for the in-process command path (https only, 127.0.0.1 only)."""
    doc = {
        "device": {"id": DEVICE_ID, "state_dir": str(tmp_path / "state"), "groups": [GROUP]},
        "camera": [{"name": "cam0", "source": str(DEMO / "clip.avi")}],
        "model": {"path": str(DEMO / "color_blobs.tflite"), "labels": str(DEMO / "labels.txt")},
        "mqtt": {"prefix": PREFIX},
        "updates": {
            "trusted_keys": [str(trusted_pub)],
            "allowed_hosts": ["127.0.0.1"],
            "retries": 0,
            "download_timeout": 2.0,
        },
    }
    return parse_config(to_toml(doc), env={})


def topic_for(command: str, via_group: bool) -> str:
    """The device or group topic of a command."""
    base = f"{PREFIX}/group/{GROUP}" if via_group else f"{PREFIX}/{DEVICE_ID}"
    return f"{base}/cmd/{command}"


FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    phases=(Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
)


def test_fuzzed_commands_in_process_are_all_rejected_cleanly(tmp_path, release_keys):
    config = fuzz_config(tmp_path, release_keys.trusted_pub)
    recorder = StateRecorder(f"{PREFIX}/{DEVICE_ID}/model")
    service = UpdateService(config, model_options(config), None, recorder.publish_model)
    problems = Problems()
    # The rejections are logged (tens of thousands of lines): they go to the checker
    # only, not to pytest's capture.
    agent_logger = logging.getLogger("edge_agent")
    agent_logger.addHandler(problems)
    saved = agent_logger.propagate, agent_logger.level
    agent_logger.propagate, agent_logger.level = False, logging.INFO
    old_hook, threading.excepthook = threading.excepthook, problems.excepthook
    counts: collections.Counter = collections.Counter()
    categories: collections.Counter = collections.Counter()
    payload_bytes = [0]
    service.start(None)
    t0 = time.monotonic()
    try:

        @settings(FUZZ_SETTINGS, max_examples=IN_PROCESS_PAYLOADS)
        @given(payload_strategy(release_keys), st.booleans())
        def one(drawn, via_group):
            category, command, payload = drawn
            start = len(recorder.states)
            service.handle(command, payload, topic_for(command, via_group))
            state = recorder.wait_terminal(start)
            check_state(state, sent_request_id(payload))
            counts[state["reason"]] += 1
            categories[category] += 1
            payload_bytes[0] += len(payload)

        one()
    finally:
        took = time.monotonic() - t0
        service.stop(5.0)
        threading.excepthook = old_hook
        agent_logger.removeHandler(problems)
        agent_logger.propagate, agent_logger.level = saved
    total = sum(counts.values())
    print(
        f"\nFIGURE fuzz_in_process: payloads={total} rejected={total} seconds={took:.1f} "
        f"MiB={payload_bytes[0] / 2**20:.1f} log_lines={problems.lines} "
        f"longest_log_line={problems.longest}\n  by reason: {dict(counts.most_common())}"
        f"\n  by kind: {dict(categories.most_common())}"
    )
    assert total >= IN_PROCESS_PAYLOADS
    assert problems.found == [] and recorder.unencodable == []
    # One terminal state per payload (plus the startup one); in between at most the
    # start of a download, never "verifying" or "installing".
    kinds = collections.Counter(s["state"] for s in recorder.states)
    assert kinds["failed"] == total and kinds["active"] == 1, kinds
    assert set(kinds) <= {"failed", "active", "downloading"}, kinds
    assert recorder.states[0]["reason"] == "configured"
    assert not (tmp_path / "state" / "models" / "active").exists()
    models = tmp_path / "state" / "models"
    assert [p.name for p in models.iterdir() if p.is_dir() and p.name[0] != "."] == []


def test_fuzzed_commands_through_the_broker_are_rejected_on_the_model_topic(
    secure_daemon, secure_broker, monitor, release_keys
):
    topics = secure_daemon.topics
    operator = secure_broker.session("operator")
    counts: collections.Counter = collections.Counter()
    t0 = time.monotonic()
    try:

        @settings(FUZZ_SETTINGS, max_examples=BROKER_PAYLOADS)
        @given(payload_strategy(release_keys), st.booleans())
        def one(drawn, via_group):
            _, command, payload = drawn
            seen = {id(m) for m in monitor.on(topics.model)}
            reply = operator.publish(topic_for(command, via_group), payload)
            assert str(reply) == "Success"
            state = monitor.wait_for(
                topics.model,
                lambda m: id(m) not in seen and m.json()["state"] in TERMINAL,
                timeout=20,
            ).json()
            check_state(state, sent_request_id(payload))
            counts[state["reason"]] += 1

        one()
    finally:
        took = time.monotonic() - t0
        operator.close()
    total = sum(counts.values())
    print(
        f"\nFIGURE fuzz_broker: payloads={total} rejected={total} seconds={took:.1f}"
        f"\n  by reason: {dict(counts.most_common())}"
    )
    assert total >= BROKER_PAYLOADS
    # The daemon is unharmed: still running, still publishing, nothing escaped.
    before = len(monitor.on(topics.results))
    monitor.wait_count(topics.results, before + 5, timeout=20)
    assert secure_daemon.alive()
    log = secure_daemon.log()
    for bad in ("Traceback", "Logging error", "crashed", "internal_error", "unexpected error"):
        assert bad not in log, log[log.find(bad) - 2000 : log.find(bad) + 2000]
    assert not re.search(r"^2025-01-01 00:00:00 ERROR forged", log, re.M)
