"""Publishes the broker refused, and other problems the broker link reports.

An MQTT 5 broker answers a QoS 1 publish it will not take (its ACL denies the topic, a
quota, an invalid payload) with a PUBACK whose reason code is >= 0x80. That is not a
delivery: the message is counted as ``refused``, never as published, and the problem is
logged and kept as :attr:`BrokerProblems.error` for the status. The publisher does not
retry a refused message: the broker refuses it again every time, and retrying it would
hold back every result behind it (see README "Results the broker refuses").

Owned by the publisher thread (no lock; readers take a consistent snapshot of a str/int).
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)

LOG_EVERY_S = 60.0  # a topic's refusals are logged at most this often


class BrokerProblems:
    """Counts refused publishes and remembers the last link problem, for stats and status.

    Args:
        where: ``host:port`` list for log lines.
        clock: ``time.monotonic`` (injectable for tests).
    """

    def __init__(self, where: str, clock=time.monotonic):
        self._where, self._clock = where, clock
        self._log_at: dict[str, float] = {}
        self._since_log: dict[str, int] = {}
        self.refused = 0
        self.oversized = 0
        self.error = ""
        self._refused_topic: str | None = None  # the topic of a refusal in ``error``
        self._hint = ""  # the reconnect hint in ``error``, if any
        self._unsubscribed = ""  # the refused command subscriptions in ``error``, if any

    def refused_publish(self, topic: str, reason: str) -> None:
        """The broker refused a publish on ``topic`` (PUBACK reason ``reason``)."""
        self.refused += 1
        self.error = (
            f"broker refused publishing to {topic}: {reason} "
            "(check the broker's ACL for this device; refused messages are not retried)"
        )
        self._refused_topic = topic
        self._since_log[topic] = self._since_log.get(topic, 0) + 1
        now = self._clock()
        if now < self._log_at.get(topic, 0.0):
            return
        self._log_at[topic] = now + LOG_EVERY_S
        count = self._since_log.pop(topic)
        logger.error(
            "mqtt %s: the broker refused %d publish(es) to %s: %s; they are not retried "
            "(%d refused in all; logged again in %.0fs at most)",
            self._where,
            count,
            topic,
            reason,
            self.refused,
            LOG_EVERY_S,
        )

    def oversized_packet(self, topic: str, size: int, limit: int, retained: bool) -> None:
        """An incoming packet over ``mqtt.max_packet_size`` was read and discarded."""
        self.oversized += 1
        what = "retained message" if retained else "message"
        hint = f"; clear it by publishing an empty retained message to {topic}" if retained else ""
        self.error = (
            f"discarded an incoming {what} of {size} bytes on {topic or '(unknown topic)'}: "
            f"exceeds mqtt.max_packet_size ({limit}){hint}"
        )
        logger.warning("mqtt %s: %s", self._where, self.error)

    def quarantined(self, topic: str, size: int) -> None:
        """The broker ended the connection ``quarantine.REPEATS`` times in a row with a
        message on ``topic`` of ``size`` bytes unacknowledged: it is refused from now on."""
        self.error = (
            f"the broker kept ending the connection right after a message of {size} bytes "
            f"on {topic}: it is refused from now on, not sent again (over the broker's "
            "packet size limit, or denied by its policy?)"
        )
        self._refused_topic = topic
        logger.error("mqtt %s: %s", self._where, self.error)

    def accepted(self, topic: str) -> None:
        """The broker took a publish on ``topic``: a refusal there is over (its ACL was
        fixed), so it no longer stands as the link's error."""
        if topic == self._refused_topic:
            self._refused_topic = None
            self.clear(self.error)

    def subscriptions(self, refused: list[str]) -> None:
        """The broker's SUBACK: ``refused`` lists the command filters it would not grant
        (``"filter: reason"``, its ACL); empty when all were, which ends an earlier
        refusal. Without them no command or pushed update reaches the device, which the
        status must say: an operator would otherwise wait for answers that never come."""
        if not refused:
            if self._unsubscribed:
                self.clear(self._unsubscribed)
                self._unsubscribed = ""
            return
        self.error = self._unsubscribed = (
            f"broker refused the command subscriptions ({'; '.join(refused)}): commands and "
            "model updates sent over MQTT do not reach this device (check the broker's ACL: "
            "the device must be allowed to read them)"
        )
        logger.error("mqtt %s: %s", self._where, self.error)

    def link_hint(self, hint: str) -> None:
        """After a lost connection: the reconnect hint (short-lived connections in a
        row), or "" once a connection stayed up, which ends an earlier hint."""
        if hint:
            self.error = self._hint = hint
        elif self._hint:
            self.clear(self._hint)
            self._hint = ""

    def clear(self, error: str) -> None:
        """Forget ``error`` if it is still the current one (the problem went away)."""
        if self.error == error:
            self.error = ""
