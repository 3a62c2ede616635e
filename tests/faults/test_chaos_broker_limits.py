"""A broker's MQTT 5 limits (CONNACK) against the publisher: a message bigger than the
broker's Maximum Packet Size is refused on the device, not sent (mosquitto would end the
connection for it, and, sent first again after every reconnect, it would hold back every
result behind it for good); no more publishes await their acknowledgement than the
broker's Receive Maximum (past it mosquitto refuses a QoS 2 one, which paho reports as
delivered)."""

from __future__ import annotations

import logging

import pytest

from tests.support.broker import MOSQUITTO, MosquittoBroker, MqttSubscriber, wait_until

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto")

LIMIT = 2048
BIG = {"pad": "x" * 4000}  # one result with many detections, over the broker's limit


@pytest.fixture
def small_broker(tmp_path):
    """A mosquitto that takes packets of at most LIMIT bytes (not started); it keeps
    sessions across a restart."""
    broker = MosquittoBroker(tmp_path / "broker", persistent=True)
    with broker.config.open("a") as conf:
        conf.write(f"max_packet_size {LIMIT}\n")
    yield broker
    broker.kill()


def _results(sub: MqttSubscriber) -> list[int]:
    return [m.json()["seq"] for m in sub.on("edge/dev1/results")]


def test_a_result_over_the_brokers_packet_size_is_refused_not_resent_for_ever(
    small_broker, mqtt_publisher_factory, caplog
):
    small_broker.start()
    sub = MqttSubscriber(small_broker.host, small_broker.port, ["edge/dev1/#"]).start()
    caplog.set_level(logging.ERROR)
    try:
        pub = mqtt_publisher_factory(small_broker.port, protocol="5")
        assert pub.wait_connected(10)
        pub.publish("edge/dev1/cam0/person/snapshot", b"j" * 4000, 1, True)  # retained
        for seq in range(10):
            pub.publish_result({"seq": seq, **(BIG if seq == 3 else {})})
        wait_until(lambda: len(_results(sub)) >= 9, 10, "the nine results that fit")
        wait_until(lambda: pub.stats()["published"] == 9, 10, "their acknowledgements")
        stats = pub.stats()
    finally:
        sub.stop()
    assert _results(sub) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert (stats["refused"], stats["published"], stats["reconnects"]) == (2, 9, 0)
    assert stats["connected"] and stats["spool_pending"] == 0
    refusals = [r.getMessage() for r in caplog.records if "Packet too large" in r.getMessage()]
    assert len(refusals) == 2 and "edge/dev1/results" in refusals[1], refusals


def test_an_oversized_spooled_result_does_not_hold_back_the_replay(
    small_broker, mqtt_publisher_factory
):
    small_broker.start()
    sub = MqttSubscriber(
        small_broker.host, small_broker.port, ["edge/dev1/results"], persistent=True
    ).start()
    try:
        small_broker.stop()  # the subscriber's session is kept: it misses nothing
        pub = mqtt_publisher_factory(small_broker.port, protocol="5")
        for seq in range(10):
            pub.publish_result({"seq": seq, **(BIG if seq == 0 else {})})
        wait_until(lambda: pub.stats()["spool_pending"] == 10, 10, "ten results spooled")
        small_broker.start()
        wait_until(lambda: len(_results(sub)) >= 9, 10, "the nine results that fit")
        wait_until(lambda: pub.stats()["spool_pending"] == 0, 10, "the spool replayed")
    finally:
        sub.stop()
    stats = pub.stats()
    assert _results(sub) == list(range(1, 10))
    assert (stats["refused"], stats["replayed"], stats["reconnects"]) == (1, 9, 0)


def test_no_more_in_flight_than_the_brokers_receive_maximum(tmp_path, mqtt_publisher_factory):
    broker = MosquittoBroker(tmp_path / "broker")
    with broker.config.open("a") as conf:
        conf.write("max_inflight_messages 1\n")  # mosquitto's Receive Maximum for MQTT 5
    broker.start()
    sub = MqttSubscriber(broker.host, broker.port, ["edge/dev1/results"]).start()
    try:
        pub = mqtt_publisher_factory(broker.port, protocol="5", qos_results=2)
        assert pub.wait_connected(10)
        for seq in range(50):
            pub.publish_result({"seq": seq})
        wait_until(lambda: pub.stats()["published"] == 50, 10, "50 results acknowledged")
        wait_until(lambda: len(_results(sub)) >= 50, 10, "50 results at the subscriber")
    finally:
        sub.stop()
        broker.kill()
    assert _results(sub) == list(range(50))


def test_qos_2_results_go_at_the_brokers_maximum_qos(tmp_path, mqtt_publisher_factory):
    broker = MosquittoBroker(tmp_path / "broker")
    with broker.config.open("a") as conf:
        conf.write("max_qos 1\n")  # as AWS IoT Core and Azure Event Grid declare
    broker.start()
    sub = MqttSubscriber(broker.host, broker.port, ["edge/dev1/results"]).start()
    try:
        pub = mqtt_publisher_factory(broker.port, protocol="5", qos_results=2)
        assert pub.wait_connected(10)
        for seq in range(10):
            pub.publish_result({"seq": seq})
        wait_until(lambda: len(_results(sub)) >= 10, 10, "10 results at the subscriber")
        wait_until(lambda: pub.stats()["published"] == 10, 10, "10 results acknowledged")
    finally:
        sub.stop()
        broker.kill()
    assert _results(sub) == list(range(10))
    assert pub.stats()["reconnects"] == 0


def test_retained_values_wait_for_the_brokers_receive_maximum(tmp_path, mqtt_publisher_factory):
    broker = MosquittoBroker(tmp_path / "broker")
    with broker.config.open("a") as conf:
        conf.write("max_inflight_messages 1\n")
    broker.start()
    topics = [f"edge/dev1/cam0/label{i}" for i in range(5)]
    sub = MqttSubscriber(broker.host, broker.port, topics).start()
    try:
        pub = mqtt_publisher_factory(broker.port, protocol="5")
        assert pub.wait_connected(10)
        for topic in topics:  # latest values, sent together by the publisher thread
            pub.publish(topic, b"1", qos=2, retain=True, urgent=False)
        wait_until(lambda: all(sub.on(t) for t in topics), 10, "the 5 retained values")
    finally:
        sub.stop()
        broker.kill()


@pytest.fixture
def unretaining_broker(tmp_path):
    """A mosquitto that keeps no retained messages: it refuses an MQTT 5 CONNECT whose
    will is retained (CONNACK "Retain not supported") and ends the connection of a client
    that publishes a retained message."""
    broker = MosquittoBroker(tmp_path / "broker")
    with broker.config.open("a") as conf:
        conf.write("retain_available false\n")
    broker.start()
    yield broker
    broker.kill()


@pytest.mark.parametrize("protocol", ["5", "auto"])
def test_a_broker_without_retained_messages_gets_everything_unretained(
    unretaining_broker, mqtt_publisher_factory, protocol
):
    broker = unretaining_broker
    sub = MqttSubscriber(broker.host, broker.port, ["edge/dev1/#"]).start()
    try:
        # A retry after the refused CONNECT waits for no backoff (reconnect_min is 30 s).
        pub = mqtt_publisher_factory(
            broker.port, protocol=protocol, reconnect_min=30, reconnect_max=60
        )
        assert pub.wait_connected(10), "connected without a retained will"
        pub.publish_status({"state": "running"})
        pub.publish("edge/dev1/cam0/person/count", b"2", 1, True)
        pub.publish_model({"state": "idle"})
        for seq in range(5):
            pub.publish_result({"seq": seq})
        wait_until(lambda: len(_results(sub)) >= 5, 10, "the five results")
        wait_until(lambda: sub.on("edge/dev1/cam0/person/count"), 10, "the count")
        wait_until(lambda: sub.on("edge/dev1/model"), 10, "the model state")
        stats = pub.stats()
        assert pub.stop(10)
        wait_until(lambda: len(sub.on("edge/dev1/available")) >= 2, 10, "online, then offline")
    finally:
        sub.stop()
    assert [m.payload for m in sub.on("edge/dev1/available")] == [b"online", b"offline"]
    assert sub.on("edge/dev1/status")[-1].json() == {"state": "running"}
    assert _results(sub) == list(range(5))
    assert stats["retain_available"] is False
    assert (stats["reconnects"], stats["connect_failures"], stats["refused"]) == (0, 0, 0)


def test_what_a_late_subscriber_missed_is_sent_again_on_request(
    unretaining_broker, mqtt_publisher_factory
):
    """Home Assistant's birth asks for it (:meth:`MqttPublisher.republish_latest`)."""
    broker = unretaining_broker
    early = MqttSubscriber(broker.host, broker.port, ["edge/dev1/#"]).start()
    late = MqttSubscriber(broker.host, broker.port, ["edge/dev1/#"], name="late")
    try:
        pub = mqtt_publisher_factory(broker.port, protocol="5")
        assert pub.wait_connected(10)
        pub.publish_status({"state": "running"})
        pub.publish("edge/dev1/cam0/person/count", b"2", 1, True)
        wait_until(lambda: early.on("edge/dev1/cam0/person/count"), 10, "the count")
        wait_until(lambda: early.on("edge/dev1/status"), 10, "the status")
        late.start()
        pub.republish_latest()
        wait_until(lambda: late.on("edge/dev1/available"), 10, "online again")
        wait_until(lambda: late.on("edge/dev1/cam0/person/count"), 10, "the count again")
        wait_until(lambda: late.on("edge/dev1/status"), 10, "the status again")
    finally:
        late.stop()
        early.stop()
    assert late.on("edge/dev1/available")[0].payload == b"online"
    assert late.on("edge/dev1/cam0/person/count")[0].payload == b"2"
    assert pub.stats()["reconnects"] == 0


def test_a_broker_with_retained_messages_is_asked_nothing_again(tmp_path, mqtt_publisher_factory):
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    early = MqttSubscriber(broker.host, broker.port, ["edge/dev1/#"]).start()
    late = MqttSubscriber(broker.host, broker.port, ["edge/dev1/#"], name="late")
    try:
        pub = mqtt_publisher_factory(broker.port, protocol="5")
        assert pub.wait_connected(10)
        pub.publish("edge/dev1/cam0/person/count", b"2", 1, True)
        wait_until(lambda: early.on("edge/dev1/cam0/person/count"), 10, "the count")
        late.start()
        wait_until(lambda: late.on("edge/dev1/cam0/person/count"), 10, "the retained count")
        pub.republish_latest()  # nothing: the broker kept it
        pub.publish_result({"seq": 1})  # a marker behind anything it would have queued
        wait_until(lambda: _results(late) == [1], 10, "the marker")
    finally:
        late.stop()
        early.stop()
        broker.kill()
    assert [m.retain for m in late.on("edge/dev1/cam0/person/count")] == [True]
    assert [m.payload for m in late.on("edge/dev1/available")] == [b"online"]
    assert pub.stats()["retain_available"] is True


def test_over_311_a_result_the_broker_ends_the_connection_for_is_refused_after_3_tries(
    small_broker, mqtt_publisher_factory, caplog
):
    """MQTT 3.1.1 has no Maximum Packet Size: mosquitto just ends the connection for a
    packet over its ``max_packet_size``, again after every reconnect."""
    small_broker.start()
    sub = MqttSubscriber(small_broker.host, small_broker.port, ["edge/dev1/#"]).start()
    caplog.set_level(logging.ERROR)
    try:
        pub = mqtt_publisher_factory(small_broker.port, protocol="3.1.1")
        assert pub.wait_connected(10)
        for seq in range(10):
            pub.publish_result({"seq": seq, **(BIG if seq == 3 else {})})
        wait_until(lambda: set(_results(sub)) >= {0, 1, 2, 4, 5, 6, 7, 8, 9}, 20, "the rest")
        wait_until(lambda: pub.stats()["spool_pending"] == 0, 10, "the spool replayed")
        stats = pub.stats()
    finally:
        sub.stop()
    assert 3 not in _results(sub)
    assert stats["refused"] == 1 and 3 <= stats["reconnects"] <= 6, stats
    # Logged; the error clears once the broker takes the next result on that topic.
    told = [r.getMessage() for r in caplog.records if "refused from now on" in r.getMessage()]
    assert len(told) == 1 and "edge/dev1/results" in told[0], told
    assert pub.error == "" and pub.durability()["refused"] == 1


def test_over_311_a_retained_value_the_broker_ends_the_connection_for_is_not_resent(
    small_broker, mqtt_publisher_factory
):
    small_broker.start()
    sub = MqttSubscriber(small_broker.host, small_broker.port, ["edge/dev1/#"]).start()
    try:
        pub = mqtt_publisher_factory(small_broker.port, protocol="3.1.1")
        assert pub.wait_connected(10)
        pub.publish("edge/dev1/cam0/person/snapshot", b"j" * 4000, 1, True)  # every CONNACK
        wait_until(lambda: pub.stats()["refused"] == 1, 20, "the snapshot refused")
        reconnects = pub.stats()["reconnects"]
        for seq in range(5):
            pub.publish_result({"seq": seq})
        wait_until(lambda: _results(sub) == list(range(5)), 10, "results behind it")
        pub.publish("edge/dev1/cam0/person/snapshot", b"small", 1, True)  # a new value
        wait_until(lambda: sub.on("edge/dev1/cam0/person/snapshot"), 10, "the new snapshot")
    finally:
        sub.stop()
    assert pub.stats()["reconnects"] == reconnects and pub.connected
