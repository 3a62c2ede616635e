"""Durable messages from the wire to their release: acknowledgements, refusals, counters.

A durable message is tracked in the :class:`~edge_agent.publishing.outbox.InflightWindow`
until the broker acknowledges it, and released strictly in send order: a replayed one is
committed in the spool, a live one counts as secured for the loss ledger. A message the
broker refused (an MQTT 5 PUBACK with a failure reason) is released the same way, not
retried (the broker would refuse it again and hold back every result behind it), and
counted as refused, never as published (:mod:`~edge_agent.publishing.refusals`). A message
bigger than the Maximum Packet Size of the broker's MQTT 5 CONNACK is refused here, unsent:
the broker would end the connection for it, again after every reconnect; so is one the
broker kept ending the connection for (:mod:`~edge_agent.publishing.quarantine`).

Owned by the publisher thread.
"""

from __future__ import annotations

from edge_agent.publishing.connection import Connection, Sent
from edge_agent.publishing.durable import Durability
from edge_agent.publishing.outbox import Inflight, InflightWindow, Outgoing
from edge_agent.publishing.quarantine import Quarantine
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
        self._unsent = 0  # window keys of messages refused unsent (paho's mids are > 0)
        self._quarantine = Quarantine()

    def _refusal(self, conn: Connection, msg: Outgoing) -> str | None:
        """Why ``msg`` is refused unsent (None if it is sent)."""
        too_large = conn.too_large(msg.topic, msg.payload, msg.qos)
        return too_large or self._quarantine.refuses(msg.topic, msg.payload)

    def lost(self, sent: Sent | None) -> None:
        """A connection was lost, probing with ``sent`` unacknowledged (see
        :meth:`Quarantine.lost`); a message refused from now on is reported."""
        suspect = self._quarantine.lost(sent)
        if suspect is not None:
            self._problems.quarantined(suspect.topic, suspect.size)

    def send(self, conn: Connection, msg: Outgoing, position: Position | None = None) -> None:
        """Publish a durable message on ``conn`` and track it until acknowledged.

        A QoS 0 message has no acknowledgement: it counts as done once handed to the
        connection (still released in order, so spool commits never overtake).
        """
        refused = self._refusal(conn, msg)
        if refused is not None:
            # Released in order like an acknowledged one: spool commits never overtake.
            self._problems.refused_publish(msg.topic, refused)
            self._unsent -= 1
            self._release(self._inflight.add(self._unsent, msg, position, acked=True, refused=True))
            return
        mid = conn.publish(msg.topic, msg.payload, msg.qos, msg.retain)
        self._release(self._inflight.add(mid, msg, position, acked=msg.qos == 0))

    def publish(self, conn: Connection, msg: Outgoing) -> bool:
        """Publish a message that is not tracked (not durable); False if it is too large
        for the broker (counted as refused, not sent)."""
        refused = self._refusal(conn, msg)
        if refused is not None:
            self._problems.refused_publish(msg.topic, refused)
            return False
        conn.publish(msg.topic, msg.payload, msg.qos, msg.retain)
        return True

    def ack(self, mid: int, sent: Sent, refused: str | None) -> None:
        """A PUBACK/PUBCOMP of ``sent`` (``refused``: its failure reason): release what is
        now fully acknowledged, in order."""
        if refused is not None:
            self._problems.refused_publish(sent.topic, refused)
        else:
            self._problems.accepted(sent.topic)
            self._quarantine.acked(sent)
        self._release(self._inflight.ack(mid, refused=refused is not None))

    def settle(self, items: list[Inflight]) -> None:
        """Account for live messages acknowledged but never released (the connection was
        lost while an earlier one awaited its acknowledgement): delivered, not resent."""
        self._release(items)

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
