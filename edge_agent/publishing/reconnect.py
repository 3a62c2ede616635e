"""When the publisher tries the broker again, which MQTT version it tries, and the counts.

Owned by the publisher thread alone (no lock): a failed attempt waits a jittered,
doubling delay (the shared :class:`~edge_agent.backoff.Backoff`: a fleet that lost its
broker does not reconnect in lockstep), a CONNACK resets it, and a broker that takes the
TCP connection but never answers an MQTT 5 CONNECT is tried with 3.1.1 next
(:class:`~edge_agent.publishing.connection.ProtocolChoice`).

With several brokers (``mqtt.hosts``) each failure moves on to the next broker at once;
the backoff delay is waited once per full cycle through the list, and after a lost
connection (jittered, so a fleet that lost one broker does not land on the next in
lockstep), then the next broker is tried (:class:`~edge_agent.publishing.endpoints.HostRotation`).
"""

from __future__ import annotations

import logging
import time

from edge_agent.backoff import Backoff
from edge_agent.publishing.connection import ProtocolChoice
from edge_agent.publishing.endpoints import Endpoint, HostRotation
from edge_agent.publishing.settings import MqttSettings

logger = logging.getLogger(__name__)


class Reconnects:
    """The publisher's reconnect schedule and counters.

    Args:
        settings: ``reconnect_min``/``reconnect_max``, ``protocol``, ``connect_timeout``,
            the brokers (``endpoints()``).
    """

    def __init__(self, settings: MqttSettings):
        self._brokers = HostRotation(settings.endpoints())
        self._backoff = Backoff(settings.reconnect_min, settings.reconnect_max, jitter=0.5)
        self._protocol = ProtocolChoice(settings.protocol)
        self._connect_timeout = settings.connect_timeout
        self._ever_connected = False
        self.next_attempt = 0.0
        self.reconnects = 0
        self.connect_failures = 0

    @property
    def broker(self) -> Endpoint:
        """The broker of the next attempt (or of the live connection)."""
        return self._brokers.current

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
        same_broker = False
        if reached:
            self._protocol.no_connack()
            # MQTT 5 unanswered: the same broker again with 3.1.1 before the next one.
            same_broker = self._protocol.fell_back
        self.connect_failures += 1
        where = self._brokers.current
        cycle_done = not same_broker and self._brokers.failed()
        delay = self._backoff.next() if cycle_done or len(self._brokers.endpoints) == 1 else 0.0
        self.next_attempt = time.monotonic() + delay
        logger.warning(
            "mqtt %s: cannot connect (%s); trying %s in %.1fs",
            where,
            reason,
            self._brokers.current,
            delay,
        )

    def lost(self) -> None:
        """An established connection was lost: try the next broker after the current delay."""
        self._brokers.lost()
        self.next_attempt = time.monotonic() + self._backoff.next()

    def connected(self) -> None:
        """A CONNACK: reset the delay, count a reconnect, say if MQTT 5 was refused."""
        self._backoff.reset()
        self._brokers.connected()
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        if self._protocol.fell_back:
            logger.warning(
                "mqtt %s: the broker speaks MQTT 3.1.1 only: max_packet_size is enforced on "
                "the device, not by the broker (see deploy/mosquitto/edge-agent-limits.conf)",
                self._brokers.current,
            )
