"""Publishes an MQTT 5 broker refuses (PUBACK reason >= 0x80, e.g. its ACL denies the
topic) are not deliveries: counted as ``refused``, never as published, logged naming the
topic, reported in the publisher's ``error``; they are not retried, so the results after
them still flow."""

from __future__ import annotations

import glob
import json
import logging

import pytest

from tests.support.broker import MOSQUITTO, MosquittoBroker, MqttSubscriber, wait_until

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto")


@pytest.fixture
def acl_broker(tmp_path):
    """A mosquitto whose ACL lets anonymous clients write only edge/dev1/status and
    available, and read the command topics."""
    broker = MosquittoBroker(tmp_path / "broker")
    acl = tmp_path / "acl"
    acl.write_text(
        "topic readwrite edge/dev1/available\n"
        "topic readwrite edge/dev1/status\n"
        "topic read edge/dev1/cmd/#\n"
        "topic read edge/#\n"
    )
    with broker.config.open("a") as conf:
        conf.write(f"acl_file {acl}\n")
    broker.start()
    yield broker
    broker.kill()


def test_results_the_broker_refuses_are_counted_refused_not_published(
    acl_broker, mqtt_publisher_factory, caplog
):
    sub = MqttSubscriber(acl_broker.host, acl_broker.port, ["edge/dev1/#"]).start()
    try:
        with caplog.at_level(logging.WARNING):
            pub = mqtt_publisher_factory(acl_broker.port, protocol="5")
            assert pub.wait_connected(10)
            for seq in range(3):
                pub.publish_result({"seq": seq})
            pub.publish_status({"state": "running"})
            wait_until(lambda: pub.stats()["refused"] == 3, 10, "three refused results")
            sub.wait_for("edge/dev1/status")  # allowed topics still go through
    finally:
        sub.stop()
    stats = pub.stats()
    assert (stats["published"], stats["replayed"], stats["spool_pending"]) == (0, 0, 0)
    assert pub.durability()["refused"] == 3
    assert sub.on("edge/dev1/results") == []
    assert "edge/dev1/results: Not authorized" in pub.error
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]  # once per topic
    assert "edge/dev1/results" in refusals[0].getMessage()


# mosquitto's acl_file grants every SUBACK (it filters at delivery); its dynamic-security
# plugin refuses a subscription as AWS IoT Core, EMQX or RabbitMQ do (0x87; 0x80 in 3.1.1).
DYNSEC = next(iter(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")), None)
NO_COMMANDS = {
    "defaultACLAccess": {
        "publishClientSend": True,
        "publishClientReceive": True,
        "subscribe": True,
        "unsubscribe": True,
    },
    "clients": [],
    "groups": [{"groupname": "anonymous", "roles": [{"rolename": "no-commands"}]}],
    "roles": [
        {
            "rolename": "no-commands",
            "acls": [
                {"acltype": "subscribePattern", "topic": t, "priority": 0, "allow": False}
                for t in ("edge/+/cmd/#", "edge/group/+/cmd/#")
            ],
        }
    ],
    "anonymousGroup": "anonymous",
}


@pytest.mark.skipif(DYNSEC is None, reason="needs mosquitto's dynamic-security plugin")
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_command_subscriptions_the_broker_refuses_are_reported_in_the_error(
    tmp_path, mqtt_publisher_factory, caplog, protocol
):
    # The broker grants the device its results and status but not its command topics: no
    # command nor pushed update would ever reach it, and the status must say so.
    broker = MosquittoBroker(tmp_path / "broker")
    rules = tmp_path / "dynsec.json"
    rules.write_text(json.dumps(NO_COMMANDS))
    with broker.config.open("a") as conf:
        conf.write(f"plugin {DYNSEC}\nplugin_opt_config_file {rules}\n")
    broker.start()
    try:
        with caplog.at_level(logging.WARNING):
            pub = mqtt_publisher_factory(broker.port, protocol=protocol, groups=("lobby",))
            assert pub.wait_connected(10)
            wait_until(lambda: "command subscriptions" in pub.error, 10, "the refusal reported")
        assert "edge/dev1/cmd/#" in pub.error and "edge/group/lobby/cmd/#" in pub.error
        assert "ACL" in pub.error
        logged = [
            r.getMessage() for r in caplog.records if "command subscriptions" in r.getMessage()
        ]
        assert len(logged) == 1 and "edge/dev1/cmd/#" in logged[0], logged
        pub.publish_result({"seq": 1})  # results still flow
        wait_until(lambda: pub.stats()["published"] == 1, 10, "the result published")
    finally:
        broker.kill()
