"""Security: only the operator can command a device; nobody else can even log in.

The broker (tests/support/secure_broker.py) refuses anonymous and wrong-password logins
and enforces a per-account ACL: a device writes only under its own topics and reads
only its command topics; the operator writes commands. These tests show that another
device's account can neither command ``e2e-dev`` (directly or through its group), nor
forge its results, nor read anything of it, while the operator's identical command
does reach it.

"Never reached the device" is shown without waiting for silence: the intruder's publish
is acknowledged (refused) before the operator sends the control command on the same
topic, and the device handles commands in order, so a delivered intrusion would have
been reported on the ``model`` topic before the control's state.
"""

from __future__ import annotations

import re

import paho.mqtt.client as mqtt
import pytest

from edge_agent.updates.commands import build_update_command
from tests.faults.conftest import GROUP, OTHER_DEVICE
from tests.support.daemon import DEVICE_ID, PREFIX
from tests.support.secure_broker import Account, Refused
from tests.support.updates_release import make_release

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

DEVICE_UPDATE = f"{PREFIX}/{DEVICE_ID}/cmd/model/update"
DEVICE_ROLLBACK = f"{PREFIX}/{DEVICE_ID}/cmd/model/rollback"
GROUP_UPDATE = f"{PREFIX}/group/{GROUP}/cmd/model/update"


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["mqtt311", "mqtt5"])
def test_anonymous_and_wrong_password_logins_are_refused(secure_broker, protocol):
    with pytest.raises(Refused, match="Not authorized"):
        secure_broker.session(None, protocol=protocol)
    stolen_name = Account(DEVICE_ID, "not-the-password")
    with pytest.raises(Refused, match="Not authorized"):
        secure_broker.session(stolen_name)
    log = secure_broker.logs()
    assert "disconnected, not authorised" in log
    # The refused clients never got as far as a PUBLISH.
    assert not re.search(r"Received PUBLISH from test-anon-", log)


def unsigned_command(tmp_path, request_id: str) -> bytes:
    """A well-formed update command carrying an unsigned release."""
    release = make_release(tmp_path / "releases", None, "2")
    return build_update_command(
        envelope=release.envelope,
        base_url="http://127.0.0.1:9/releases/cls/2/",
        request_id=request_id,
    )


def test_another_device_cannot_command_or_impersonate_this_device(
    tmp_path, secure_daemon, secure_broker, monitor
):
    topics = secure_daemon.topics
    intruder = secure_broker.session(OTHER_DEVICE)
    intruder311 = secure_broker.session(OTHER_DEVICE, protocol=mqtt.MQTTv311)
    try:
        refused = {
            topic: str(intruder.publish(topic, unsigned_command(tmp_path, f"intruder-{i}")))
            for i, topic in enumerate((DEVICE_UPDATE, GROUP_UPDATE, DEVICE_ROLLBACK))
        }
        refused[topics.results] = str(intruder.publish(topics.results, b'{"intruder": 1}'))
        # MQTT 3.1.1 cannot say no: the PUBACK comes, the message is dropped all the same.
        intruder311.publish(DEVICE_UPDATE, unsigned_command(tmp_path, "intruder-311"))
    finally:
        intruder.close()
        intruder311.close()
    assert set(refused.values()) == {"Not authorized"}, refused

    operator = secure_broker.session("operator")
    try:
        assert str(operator.publish(DEVICE_UPDATE, unsigned_command(tmp_path, "op-1"))) == (
            "Success"
        )
    finally:
        operator.close()
    state = monitor.wait_for(topics.model, lambda m: m.json().get("request_id") == "op-1").json()
    assert (state["state"], state["reason"]) == ("failed", "unsigned")

    seen_ids = [m.json().get("request_id") for m in monitor.on(topics.model)]
    assert not [r for r in seen_ids if r and r.startswith("intruder")], seen_ids
    # The monitor reads '#': nothing the intruder sent was accepted by the broker at all.
    assert not [m.topic for m in monitor.messages if b"intruder" in m.payload]
    log = secure_broker.logs()
    for topic in (DEVICE_UPDATE, GROUP_UPDATE, DEVICE_ROLLBACK, topics.results):
        assert re.search(rf"Denied PUBLISH from test-{OTHER_DEVICE}-\w+ \(.*'{topic}'", log), topic
    print(f"FIGURE acl_intrusion: refused_publishes={len(refused) + 1} delivered=0")


def test_another_device_reads_nothing_of_this_device(secure_daemon, secure_broker, monitor):
    topics = secure_daemon.topics
    spy = secure_broker.subscriber(OTHER_DEVICE, ["#", f"{PREFIX}/{DEVICE_ID}/#"])
    try:
        before = len(monitor.on(topics.results))
        operator = secure_broker.session("operator")
        try:
            operator.publish(DEVICE_ROLLBACK, b'{"request_id": "spy-check"}')
        finally:
            operator.close()
        state = monitor.wait_for(
            topics.model, lambda m: m.json().get("request_id") == "spy-check"
        ).json()
        assert (state["state"], state["reason"]) == ("failed", "no_previous")
        monitor.wait_count(topics.results, before + 5, timeout=20)
    finally:
        spy.stop()
    # The command, the device's results, status, stats, model state and discovery
    # configs all went by; the other device's account received none of it.
    assert spy.messages == [], [m.topic for m in spy.messages][:10]
