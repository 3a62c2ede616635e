"""Messages the broker keeps ending the connection for are refused, not sent for ever.

Over MQTT 3.1.1 a broker cannot refuse a publish: past its packet size limit (mosquitto's
``max_packet_size``, Azure IoT Hub's 256 KB) or on a topic its policy denies (AWS IoT
Core), it ends the connection instead. Sent first again after every reconnect (a result
from the spool, in order; a retained value at every CONNACK), such a message would hold
back everything behind it for good while the device reconnects several times a second.

A connection the broker ends within ``STABLE_S`` of its CONNACK makes the next one
*probe* for that long: one QoS 1/2 publish unacknowledged at a time, so that if the broker
ends it, the message it ended it for is known (with several in flight it is not: the
broker's reset may discard the acknowledgements of those before it). When ``REPEATS``
probing connections in a row end with the same message unacknowledged, that message is
refused from then on like one the broker refused: counted, logged, reported as the link's
error, released in order (its spool record committed), and not sent again by this
process. A loss with another message unacknowledged, or none, starts the count again,
and so does an acknowledgement of that message: a broker that took it once does not end
connections for it (a retained value, sent again at every CONNACK, is often acknowledged
between losses). A link that drops three times in a row while the same good message is
the one in flight, never acknowledged, has it refused too.

Owned by the publisher thread.
"""

from __future__ import annotations

import collections
import hashlib
from typing import NamedTuple

from edge_agent.publishing.connection import Sent

REPEATS = 3  # connections in a row lost with the same message unacknowledged
KEEP = 64  # refused messages remembered (the oldest is forgotten past it)


class Suspect(NamedTuple):
    """A message, by topic, size and digest (its payload is not kept)."""

    topic: str
    size: int
    digest: bytes


def suspect_of(sent: Sent) -> Suspect:
    """The :class:`Suspect` of a sent message."""
    digest = hashlib.blake2b(sent.payload, digest_size=16).digest()
    return Suspect(sent.topic, len(sent.payload), digest)


class Quarantine:
    """Counts connections lost with the same message unacknowledged; refuses it at
    ``REPEATS``."""

    def __init__(self) -> None:
        self._last: Suspect | None = None
        self._count = 0
        self._refused: collections.OrderedDict[Suspect, None] = collections.OrderedDict()
        self._sizes: collections.Counter[tuple[str, int]] = collections.Counter()

    def lost(self, sent: Sent | None) -> Suspect | None:
        """A connection was lost while probing with ``sent`` unacknowledged (None: not
        probing, or nothing unacknowledged).

        Returns:
            The message refused from now on, when this loss was its ``REPEATS``-th.
        """
        if sent is None:
            self._last, self._count = None, 0
            return None
        suspect = suspect_of(sent)
        self._count = self._count + 1 if suspect == self._last else 1
        self._last = suspect
        if self._count < REPEATS:
            return None
        self._last, self._count = None, 0
        self._refused[suspect] = None
        self._sizes[suspect.topic, suspect.size] += 1
        if len(self._refused) > KEEP:
            old, _ = self._refused.popitem(last=False)
            self._sizes[old.topic, old.size] -= 1
        return suspect

    def acked(self, sent: Sent) -> None:
        """The broker acknowledged ``sent``: if it is the message being counted, the count
        starts again (free for any other message)."""
        last = self._last
        if last is None or sent.topic != last.topic or len(sent.payload) != last.size:
            return
        if suspect_of(sent) == last:
            self._last, self._count = None, 0

    def refuses(self, topic: str, payload: bytes) -> str | None:
        """Why this message is not sent (None if it is): the broker ended the connection
        for it ``REPEATS`` times. Free for any message of another topic or size."""
        if not self._refused or not self._sizes[topic, len(payload)]:
            return None
        if suspect_of(Sent(topic, payload)) not in self._refused:
            return None
        return (
            f"the broker ended the connection {REPEATS} times in a row with this message "
            f"({len(payload)} bytes) unacknowledged: over its packet size limit, or denied "
            "by its policy (MQTT 3.1.1 brokers cannot refuse a publish otherwise)"
        )
