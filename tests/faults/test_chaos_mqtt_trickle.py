"""Chaos: the path from the broker starts trickling its bytes (one every 0.2 s).

The link looks alive (bytes keep arriving) but no PUBACK and no PINGRESP completes in
time. paho sends its PINGREQ again whenever a byte arrived since the last one, so it
never gives such a link up by itself. What must hold: a PINGREQ left without its
PINGRESP for ``keepalive`` ends the connection, the results go to the spool and reach
the broker over a new connection, in order.
"""

from __future__ import annotations

import pytest

from tests.support.broker import MOSQUITTO, MosquittoBroker, MqttSubscriber, wait_until
from tests.support.chaos import first_occurrences
from tests.support.trickle_proxy import TrickleProxy

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto")

KEEPALIVE = 1  # seconds: the first PINGREQ 1 s after the last publish, given up 1 s later


def test_a_connection_that_trickles_is_given_up_after_keepalive(tmp_path, mqtt_publisher_factory):
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    sub = MqttSubscriber(broker.host, broker.port, ["edge/dev1/results"]).start()
    try:
        with TrickleProxy(broker.port) as proxy:
            pub = mqtt_publisher_factory(proxy.port, keepalive=KEEPALIVE)
            assert pub.wait_connected(10)
            pub.publish_result({"seq": 0})
            wait_until(lambda: pub.stats()["published"] == 1, 10, "the first result acked")
            proxy.trickle(0.2)  # the 20 PUBACKs alone now take 16 s to come through
            for seq in range(1, 21):
                pub.publish_result({"seq": seq})
            wait_until(
                lambda: pub.stats()["reconnects"] >= 1, 3 * KEEPALIVE + 4, "a new connection"
            )
            wait_until(
                lambda: pub.stats()["spool_pending"] == 0 and pub.stats()["inflight"] == 0,
                10,
                "the spool replayed",
            )
            wait_until(lambda: len(sub.on("edge/dev1/results")) >= 21, 10, "21 results")
    finally:
        sub.stop()
        broker.kill()
    seqs = first_occurrences([m.json()["seq"] for m in sub.on("edge/dev1/results")])
    assert seqs == list(range(21))
