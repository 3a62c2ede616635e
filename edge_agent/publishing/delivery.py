"""Durable messages from the wire to their release: acknowledgements, refusals, counters.

A durable message is tracked in the :class:`~edge_agent.publishing.outbox.InflightWindow`
until the broker acknowledges it, and released strictly in send order: a replayed one is
committed in the spool, a live one counts as secured for the loss ledger. A message the
broker refused (an MQTT 5 PUBACK with a failure reason) is released the same way, not
retried (the broker would refuse it again and hold back every result behind it), and
counted as refused, never as published (:mod:`~edge_agent.publishing.refusals`).

Owned by the publisher thread.
"""

from __future__ import annotations

from edge_agent.publishing.connection import Connection
from edge_agent.publishing.durable import Durability
from edge_agent.publishing.outbox import Inflight, InflightWindow, Outgoing
from edge_agent.publishing.refusals import BrokerProblems
from edge_agent.publishing.spool import Position


class Delivery:
    """The publisher's sending and acknowledgement accounting.

    Args:
        inflight: the in-flight window.
        store: the spool side (commits replayed messages, counts secured ones).
        problems: where refusals are counted and reported.
    """

    def __init__(self, inflight: InflightWindow, store: Durability, problems: BrokerProblems):
        self._inflight, self._store, self._problems = inflight, store, problems
        self.published = self.replayed = 0

    def send(self, conn: Connection, msg: Outgoing, position: Position | None = None) -> None:
        """Publish a durable message on ``conn`` and track it until acknowledged.

        A QoS 0 message has no acknowledgement: it counts as done once handed to the
        connection (still released in order, so spool commits never overtake).
        """
        mid = conn.publish(msg.topic, msg.payload, msg.qos, msg.retain)
        self._release(self._inflight.add(mid, msg, position, acked=msg.qos == 0))

    def ack(self, mid: int, topic: str, refused: str | None) -> None:
        """A PUBACK/PUBCOMP (``refused``: its failure reason): release what is now fully
        acknowledged, in order."""
        if refused is not None:
            self._problems.refused_publish(topic, refused)
        else:
            self._problems.accepted(topic)
        self._release(self._inflight.ack(mid, refused=refused is not None))

    def _release(self, items: list[Inflight]) -> None:
        """Account for released messages; commit replayed ones in the spool, in order."""
        for item in items:
            from_spool = self._store.released(item)
            if item.refused:
                continue  # counted by the problems, neither published nor replayed
            if from_spool:
                self.replayed += 1
            else:
                self.published += 1
