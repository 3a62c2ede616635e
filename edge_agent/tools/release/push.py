"""``edge-agent model push``: send a release to devices over MQTT and watch it land.

The push publishes the update command (the signed envelope inline, plus a base URL)
to each device's ``{prefix}/{id}/cmd/model/update``, or once to the group topic, then
follows the devices' retained ``{prefix}/{id}/model`` states carrying its request id
until each is ``active``, ``failed`` or ``rolled_back``. Group members are discovered
from the ``{prefix}/{id}/status`` messages (``"groups": [...]``): the retained ones, and
the live answers to a ``status/request`` sent to the group (brokers such as RabbitMQ 3.10
give retained messages to no wildcard subscription). ``broker.hosts`` lists brokers in
failover order, as the devices' ``mqtt.hosts``.

With ``canary=N`` the first N devices get the command first; any canary that fails
or rolls back halts the rollout before the others are touched.

The release's targets (``devices``, ``groups`` in its signed manifest) are shown and
checked first: naming a device or group the release is not meant for fails with
``incompatible`` before anything is published (the devices would refuse it anyway).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt

from edge_agent.errors import ModelUpdateError, PublishError
from edge_agent.publishing.settings import (
    MqttSettings,
    base_client,
    connect_failover,
    ssl_context,
)
from edge_agent.publishing.topics import group_status_request
from edge_agent.tools.release.lab_server import LabServer
from edge_agent.tools.release.operator import verify
from edge_agent.updates.commands import (
    UPDATE,
    build_update_command,
    check_topic_level,
    device_command_topic,
    group_command_topic,
)
from edge_agent.updates.manifest import MANIFEST_FILE, Manifest, parse_manifest
from edge_agent.updates.signing import TrustedKeys, load_envelope, parse_envelope
from edge_agent.updates.states import TERMINAL, UpdateState
from edge_agent.updates.targets import describe_targets

logger = logging.getLogger(__name__)

Report = Callable[[str, dict], None]


class PushOutcome(str, Enum):
    """What ``push`` reports for a device that gave no final state of its own."""

    TIMEOUT = "timeout"  # no final state within the wave's timeout
    SKIPPED = "skipped"  # not sent: a canary failed


@dataclass(frozen=True)
class ServeSettings:
    """The built-in lab server (used when no ``base_url`` is given)."""

    host: str = "0.0.0.0"
    port: int = 8080
    advertise_host: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


class _Link:
    """The operator's MQTT session: a queue of (topic, payload) from subscriptions."""

    def __init__(self, broker: MqttSettings, prefix: str):
        broker.validate()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connected = threading.Event()
        self._refused: str | None = None
        client_id = broker.client_id or f"edge-agent-push-{uuid.uuid4().hex[:8]}"
        self.client = base_client(broker, client_id, ssl_context(broker), reconnect=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._topics = [f"{prefix}/+/status", f"{prefix}/+/model"]
        # Several brokers (mqtt.hosts, --broker A,B): the first that answers, then the
        # next after each loss, as the devices do.
        where = connect_failover(self.client, broker)
        self.client.loop_start()
        if not self._connected.wait(broker.connect_timeout) or self._refused:
            self.close()
            why = self._refused or "no CONNACK in time"
            raise PublishError(f"broker {where}: {why}")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        """Subscribe on every (re)connect; never raise in a callback."""
        try:
            if rc.is_failure:
                self._refused = str(rc)
            else:
                for topic in self._topics:
                    client.subscribe(topic, qos=1)
        except Exception:
            logger.exception("push: on_connect failed")
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Queue the message for the push loop."""
        self.messages.put((msg.topic, bytes(msg.payload)))

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout=10)
        except (ValueError, RuntimeError) as exc:  # queue full / connection lost
            raise PublishError(f"publish to {topic} failed: {exc}") from exc
        if not info.is_published():
            raise PublishError(f"publish to {topic} not acknowledged in 10s")

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


class _Tracker:
    """Per-device state of one request, fed from the MQTT messages."""

    def __init__(self, link: _Link, prefix: str, request_id: str, report: Report):
        self.link, self.prefix, self.request_id, self.report = link, prefix, request_id, report
        self.groups: dict[str, list[str]] = {}
        self.states: dict[str, dict] = {}

    def pump(self, until: float) -> None:
        """Handle messages until ``until`` (monotonic) or the queue stays empty."""
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            try:
                topic, payload = self.link.messages.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            self._handle(topic, payload)
            if not self.link.messages.qsize():
                return

    def _handle(self, topic: str, payload: bytes) -> None:
        """Record a status (groups) or a model state carrying our request id."""
        parts = topic.split("/")
        if len(parts) < 2:
            return
        device, leaf = parts[-2], parts[-1]
        try:
            doc = json.loads(payload) if payload else None
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if leaf == "status":
            groups = doc.get("groups")
            if isinstance(groups, list):
                self.groups[device] = [g for g in groups if isinstance(g, str)]
        elif leaf == "model" and doc.get("request_id") == self.request_id:
            old = self.states.get(device)
            if old is None or (old.get("state"), old.get("percent")) != (
                doc.get("state"),
                doc.get("percent"),
            ):
                self.states[device] = doc
                self.report(device, doc)

    def wait(self, devices: Sequence[str], timeout: float) -> dict[str, str]:
        """Wait until every device is terminal; returns device -> final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.states.get(d, {}).get("state") in _TERMINAL for d in devices):
                break
            self.pump(deadline)
        final = {}
        for device in devices:
            state = self.states.get(device, {}).get("state")
            if state not in _TERMINAL:
                state = PushOutcome.TIMEOUT.value
                self.report(device, {"state": state, "request_id": self.request_id})
            final[device] = state
        return final


def push(
    release_dir: str | Path,
    *,
    broker: MqttSettings,
    prefix: str,
    devices: Sequence[str] = (),
    group: str | None = None,
    base_url: str | None = None,
    serve: ServeSettings | None = None,
    canary: int = 0,
    timeout: float = 600.0,
    discover_seconds: float = 1.5,
    force: bool = False,
    request_id: str | None = None,
    public_keys: Sequence[str] | None = None,
    report: Report | None = None,
) -> int:
    """Roll a packed release out to devices and wait for the outcome.

    Args:
        release_dir: the ``pack`` output.
        broker: the MQTT broker the devices use, and how to log in (credentials,
            TLS with an optional client certificate), as for the daemon's ``[mqtt]``.
        prefix: the topic prefix the devices use.
        devices: device ids to update (or use ``group``).
        group: update every device whose retained status lists this group.
        base_url: where the devices fetch the files (the release dir published
            at that URL); None serves them with the built-in lab server.
        serve: lab server settings (used when ``base_url`` is None).
        canary: update this many devices first; halt if any of them fails.
        timeout: seconds each wave may take.
        discover_seconds: how long to collect retained status messages for ``group``.
        force: ask devices to re-install or downgrade (they must allow it).
        request_id: id echoed in the devices' states (default: generated).
        public_keys: verify the release with these keys before pushing.
        report: ``report(device, state_dict)`` for every state change seen, plus
            ``{"state": "timeout"}`` and ``{"state": "skipped"}`` pseudo-states.

    Returns:
        0 when every device reported ``active``; 1 when any failed, rolled back,
        timed out, or was skipped after a failed canary.

    Raises:
        ModelUpdateError: the release is invalid, or ``no_devices``.
        PublishError: the broker is unreachable or refuses a publish.
        ConfigError: bad broker settings, or unusable TLS files.
        ValueError: an invalid device id or group name.
    """
    report = report or (lambda device, state: None)
    root = Path(release_dir)
    if public_keys:
        verify(root, TrustedKeys.from_paths(public_keys))
    envelope = load_envelope((root / MANIFEST_FILE).read_bytes())
    manifest = parse_manifest(parse_envelope(envelope).manifest)
    for device in devices:
        check_topic_level(device, "device id")
    if group is not None:
        check_topic_level(group, "group")
    if bool(devices) == (group is not None):
        raise ValueError("give devices or a group (not both)")
    logger.info("push: %s targets %s", manifest.label, describe_targets(manifest))
    _check_audience(manifest, devices, group)
    rid = request_id or f"push-{uuid.uuid4().hex[:12]}"
    server = None
    if base_url is None:
        s = serve or ServeSettings()
        server = LabServer(
            root, [f.name for f in manifest.files], host=s.host, port=s.port,
            advertise_host=s.advertise_host, peer=broker.endpoints()[0].host, certfile=s.certfile,
            keyfile=s.keyfile, timeout=timeout * 2 + 60,
        ).start()  # fmt: skip
        base_url = server.url
    link = None
    try:
        link = _Link(broker, prefix)
        tracker = _Tracker(link, prefix, rid, report)
        targets = list(dict.fromkeys(devices))  # de-duplicated, order kept
        if group is not None:
            # Retained statuses arrive right after SUBACK where the broker gives them to a
            # wildcard subscription; the request makes every member answer live anyway.
            link.publish(group_status_request(prefix, group), b"{}")
            end = time.monotonic() + discover_seconds
            while time.monotonic() < end:  # retained statuses arrive right after SUBACK
                tracker.pump(end)
            targets = sorted(d for d, gs in tracker.groups.items() if group in gs)
            if not targets:
                raise ModelUpdateError("no_devices", f"no device announces group {group!r}")
            logger.info("push: group %s has %d devices: %s", group, len(targets), targets)
        payload = build_update_command(
            envelope=envelope, base_url=base_url, request_id=rid, force=force
        )
        waves = [targets[:canary], targets[canary:]] if 0 < canary < len(targets) else [targets]
        for i, wave in enumerate(waves):
            if group is not None and len(waves) == 1:
                link.publish(group_command_topic(prefix, group, UPDATE), payload)
            else:
                for device in wave:
                    link.publish(device_command_topic(prefix, device, UPDATE), payload)
            what = "canary" if len(waves) > 1 and i == 0 else "rollout"
            logger.info("push: %s of %s to %s (request %s)", what, manifest.label, wave, rid)
            final = tracker.wait(wave, timeout)
            if any(state != UpdateState.ACTIVE for state in final.values()):
                skipped = {"state": PushOutcome.SKIPPED.value, "reason": "canary_failed"}
                for device in (d for w in waves[i + 1 :] for d in w):
                    report(device, {**skipped, "request_id": rid})
                return 1
        return 0
    finally:
        if link is not None:
            link.close()
        if server is not None:
            server.stop()


_TERMINAL = {state.value for state in TERMINAL}


def _check_audience(manifest: Manifest, devices: Sequence[str], group: str | None) -> None:
    """Refuse to address devices or a group the release does not target.

    Only what push can know is checked: device ids against ``devices`` when the
    release names no groups, a group against ``groups`` when it names no devices.
    Device types and model names are checked by each device.

    Raises:
        ModelUpdateError: ``incompatible``.
    """
    named_groups = manifest.groups and not manifest.devices
    if group is not None and named_groups and group not in manifest.groups:
        raise ModelUpdateError(
            "incompatible",
            f"{manifest.label} targets groups {list(manifest.groups)}, not {group!r}",
        )
    if devices and manifest.devices and not manifest.groups:
        outside = [d for d in devices if d not in manifest.devices]
        if outside:
            raise ModelUpdateError(
                "incompatible",
                f"{manifest.label} targets devices {list(manifest.devices)}, not {outside}",
            )
