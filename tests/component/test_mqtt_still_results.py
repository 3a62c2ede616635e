"""A still frame's result (it repeats earlier ones) waits for the publisher's next
batch against a real broker: delivered, in order with the urgent ones, without a
wake-up of its own."""

from __future__ import annotations

import threading
import time

from edge_agent.publishing.waker import SOON_S

RESULTS = "edge/dev1/results"
PACE_S = 0.02  # a camera's frame interval, about


def _count_wake_bytes(pub) -> list[int]:
    """Counts the bytes the producers send to wake the publisher thread."""
    sent, send = [0], pub._waker._send.send

    def counting(data: bytes) -> int:
        sent[0] += 1
        return send(data)

    pub._waker._send = type("Counted", (), {"send": staticmethod(counting)})()
    return sent


def _paced(pub, seqs: range, urgent: bool) -> None:
    pace = threading.Event()  # never set: a timed wait between results, as a camera's
    for seq in seqs:
        pub.publish_result({"seq": seq}, urgent=urgent)
        pace.wait(PACE_S)


def test_still_results_go_in_batches_in_order_with_the_urgent_ones(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory
):
    pub = mqtt_publisher_factory(mqtt_broker.port)
    assert pub.wait_connected(10)
    sent = _count_wake_bytes(pub)
    _paced(pub, range(30), urgent=False)
    lazy = sent[0]
    _paced(pub, range(30, 40), urgent=True)
    urgent = sent[0] - lazy
    mqtt_subscriber.wait_count(RESULTS, 40)
    assert [m.json()["seq"] for m in mqtt_subscriber.on(RESULTS)] == list(range(40))
    # 30 results that could wait woke the thread a few times at most (the first, and
    # again only if the producer stalled longer than a window); 10 urgent ones, 20 ms
    # apart, each sent its byte unless the thread was still busy with the one before.
    assert lazy <= 5 and urgent >= 5, (lazy, urgent)


def test_a_still_result_after_a_quiet_spell_waits_no_longer_than_a_window(
    mqtt_broker, mqtt_subscriber, mqtt_publisher_factory
):
    """With no other traffic the publisher thread sleeps a second between looks
    (``max_unacked_s`` 10: its idle tick is 1 s); a still result must still arrive
    within about SOON_S, its own byte sent when the thread would look too late."""
    pub = mqtt_publisher_factory(mqtt_broker.port, max_unacked_s=10.0)
    assert pub.wait_connected(10)
    pace, delays = threading.Event(), []  # never set: the quiet spells are timed waits
    for seq in range(5):
        pace.wait(0.3 + 0.17 * seq)  # quiet spells longer than a window, varied phase
        sent = time.monotonic()
        pub.publish_result({"seq": seq}, urgent=False)
        mqtt_subscriber.wait_count(RESULTS, seq + 1)
        delays.append(time.monotonic() - sent)
    # SOON_S plus delivery; a result left for the 1 s tick would exceed it in 5 tries
    # with a chance of 31 in 32.
    assert max(delays) < SOON_S + 0.3, [round(d, 3) for d in delays]
