"""When the publisher tries the broker again, which MQTT version it tries, and the counts.

Owned by the publisher thread alone (no lock): a failed attempt waits a jittered,
doubling delay (the shared :class:`~edge_agent.backoff.Backoff`: a fleet that lost its
broker does not reconnect in lockstep), a CONNACK resets it, and a broker that takes the
TCP connection but never answers an MQTT 5 CONNECT is tried with 3.1.1 next
(:class:`~edge_agent.publishing.connection.ProtocolChoice`).
"""

from __future__ import annotations

import logging
import time

from edge_agent.backoff import Backoff
from edge_agent.publishing.connection import ProtocolChoice
from edge_agent.publishing.settings import MqttSettings

logger = logging.getLogger(__name__)


class Reconnects:
    """The publisher's reconnect schedule and counters.

    Args:
        settings: ``reconnect_min``/``reconnect_max``, ``protocol``, ``connect_timeout``.
        where: ``host:port``, for the log lines.
    """

    def __init__(self, settings: MqttSettings, where: str):
        self._backoff = Backoff(settings.reconnect_min, settings.reconnect_max, jitter=0.5)
        self._protocol = ProtocolChoice(settings.protocol)
        self._connect_timeout = settings.connect_timeout
        self._where = where
        self._ever_connected = False
        self.next_attempt = 0.0
        self.reconnects = 0
        self.connect_failures = 0

    @property
    def version(self) -> int:
        """The MQTT version of the next attempt."""
        return self._protocol.version

    @property
    def connack_timeout(self) -> float:
        """Seconds the next attempt may wait for its CONNACK."""
        return self._protocol.connack_timeout(self._connect_timeout)

    def wait(self) -> float:
        """Seconds until the next attempt is due (0 when it is)."""
        return max(0.0, self.next_attempt - time.monotonic())

    def failed(self, reason: str, *, reached: bool = False) -> None:
        """An attempt failed; ``reached``: the broker took the connection but sent no
        CONNACK (the other MQTT version is tried next)."""
        if reached:
            self._protocol.no_connack()
        self.connect_failures += 1
        delay = self._backoff.next()
        self.next_attempt = time.monotonic() + delay
        logger.warning(
            "mqtt %s: cannot connect (%s); retrying in %.1fs", self._where, reason, delay
        )

    def lost(self) -> None:
        """An established connection was lost: try again after the current delay."""
        self.next_attempt = time.monotonic() + self._backoff.next()

    def connected(self) -> None:
        """A CONNACK: reset the delay, count a reconnect, say if MQTT 5 was refused."""
        self._backoff.reset()
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        if self._protocol.fell_back:
            logger.warning(
                "mqtt %s: the broker speaks MQTT 3.1.1 only: max_packet_size is enforced on "
                "the device, not by the broker (see deploy/mosquitto/edge-agent-limits.conf)",
                self._where,
            )
