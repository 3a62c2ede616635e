"""Publishes an MQTT 5 broker refuses (PUBACK reason >= 0x80, e.g. its ACL denies the
topic) are not deliveries: counted as ``refused``, never as published, logged naming the
topic, reported in the publisher's ``error``; they are not retried, so the results after
them still flow."""

from __future__ import annotations

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
