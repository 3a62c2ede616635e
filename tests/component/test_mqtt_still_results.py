"""A still frame's result (it repeats earlier ones) waits for the publisher's next
batch against a real broker: delivered, in order with the urgent ones, without a
wake-up of its own."""

from __future__ import annotations

import threading

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
