"""Messages the broker keeps ending the connection for (MQTT 3.1.1 cannot refuse them)."""

from __future__ import annotations

from edge_agent.publishing.connection import Sent
from edge_agent.publishing.quarantine import KEEP, REPEATS, Quarantine

BIG = Sent("ea/box/results", b"x" * 4000)


def test_the_same_message_at_repeats_probing_losses_is_refused_from_then_on():
    q = Quarantine()
    assert q.refuses(BIG.topic, BIG.payload) is None
    got = [q.lost(BIG) for _ in range(REPEATS)]
    assert got[:-1] == [None] * (REPEATS - 1) and got[-1] is not None
    assert got[-1].topic == BIG.topic and got[-1].size == 4000
    reason = q.refuses(BIG.topic, BIG.payload)
    assert reason is not None and "4000 bytes" in reason
    # Only that message: the same size and topic with another payload, another topic.
    assert q.refuses(BIG.topic, b"y" * 4000) is None
    assert q.refuses("ea/box/events", BIG.payload) is None
    assert q.refuses(BIG.topic, b"{}") is None


def test_a_loss_that_names_nothing_or_another_message_starts_the_count_again():
    q = Quarantine()
    other = Sent(BIG.topic, b"{}")
    for between in (None, other):
        for _ in range(REPEATS - 1):
            assert q.lost(BIG) is None
        assert q.lost(between) is None  # not probing, or the link flapped on another one
    assert q.refuses(BIG.topic, BIG.payload) is None
    assert [q.lost(BIG) is not None for _ in range(REPEATS)] == [False] * (REPEATS - 1) + [True]


def test_only_the_latest_refused_messages_are_remembered():
    q = Quarantine()
    made = [Sent("t", str(i).encode() * 3) for i in range(KEEP + 1)]
    for sent in made:
        for _ in range(REPEATS):
            q.lost(sent)
    assert q.refuses("t", made[0].payload) is None  # forgotten: sent (and tested) again
    assert q.refuses("t", made[1].payload) and q.refuses("t", made[-1].payload)


def test_an_acknowledgement_of_the_counted_message_starts_the_count_again():
    """A broker that took a message once does not end connections for it: a retained
    value, sent again at every CONNACK, is often in flight when a flapping link drops."""
    q = Quarantine()
    for _ in range(REPEATS - 1):
        assert q.lost(BIG) is None
    q.acked(Sent(BIG.topic, b"y" * 4000))  # another message of the same topic and size
    q.acked(Sent("ea/box/events", BIG.payload))
    assert q.lost(BIG) is not None  # those did not count: the third loss refuses it
    q2 = Quarantine()
    for _ in range(REPEATS - 1):
        q2.lost(BIG)
    q2.acked(BIG)
    assert [q2.lost(BIG) for _ in range(REPEATS - 1)] == [None] * (REPEATS - 1)
    assert q2.refuses(BIG.topic, BIG.payload) is None
