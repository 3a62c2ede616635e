"""When the publisher tries the broker again, which MQTT version it tries, and the counts.

Owned by the publisher thread alone (no lock): a failed attempt waits a jittered,
doubling delay (the shared :class:`~edge_agent.backoff.Backoff`: a fleet that lost its
broker does not reconnect in lockstep). A connection that stayed up ``STABLE_S`` resets it;
one the broker closes right after its CONNACK does not (a session taken over by another
client with the same id, a broker that drops the device for a packet it sends on every
subscribe): such a loop slows down to ``reconnect_max`` and is named in the log instead
of replaying the spool several times a second. A broker that takes the TCP connection but
never answers an MQTT 5 CONNECT is tried with 3.1.1 next
(:class:`ProtocolChoice`), and with MQTT 5 again once
that connection is lost; one that answers with a refusal (bad password, ACL) is not.

With several brokers (``mqtt.hosts``) each failure moves on to the next broker at once;
the backoff delay is waited once per full cycle through the list, and after a lost
connection (jittered, so a fleet that lost one broker does not land on the next in
lockstep), then the next broker is tried (:class:`~edge_agent.publishing.endpoints.HostRotation`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from edge_agent.backoff import Backoff
from edge_agent.publishing.endpoints import Endpoint, HostRotation
from edge_agent.publishing.settings import MqttSettings

logger = logging.getLogger(__name__)

STABLE_S = 5.0  # a connection up this long resets the reconnect delay
SHORT_LIVED_HINT = 3  # this many short-lived connections in a row are reported


class ProtocolChoice:
    """The MQTT version of the next connection attempt, from ``mqtt.protocol``.

    ``auto`` starts with MQTT 5 (the broker then enforces ``max_packet_size``) and
    alternates with 3.1.1 after each attempt that reached the broker but got no CONNACK:
    a 3.1.1-only broker (the embedded amqtt) ignores an MQTT 5 CONNECT, and a broker that
    is down fails both. Owned by the publisher thread.
    """

    def __init__(self, setting: str):
        self.auto = setting == "auto"
        self.v5 = setting != "3.1.1"

    @property
    def version(self) -> int:
        """``mqtt.MQTTv5`` or ``mqtt.MQTTv311``."""
        return mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311

    def connack_timeout(self, connect_timeout: float) -> float:
        """A broker that speaks MQTT 5 answers at once; one that does not may never."""
        return min(connect_timeout, 2.0) if self.auto else connect_timeout

    def no_connack(self) -> None:
        """An attempt reached the broker but got no CONNACK: try the other version."""
        if self.auto:
            self.v5 = not self.v5

    def again(self) -> None:
        """A connection ended: ``auto`` tries MQTT 5 first again (the CONNECT left
        unanswered may have been a stall, and over 3.1.1 no publish can be refused)."""
        self.v5 = self.v5 or self.auto

    @property
    def fell_back(self) -> bool:
        """True when ``auto`` is on 3.1.1 (the broker does not bound packet sizes)."""
        return self.auto and not self.v5


class Attempt(NamedTuple):
    """What the next connection attempt uses (the :class:`Connection` keywords)."""

    protocol: int  # mqtt.MQTTv5 or mqtt.MQTTv311
    connack_timeout: float
    broker: Endpoint
    retain: bool  # False: the broker keeps no retained messages, the will included
    probe_s: float  # after a short-lived connection: one publish at a time for this long


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
        self._client_id = settings.client_id
        self._up_since: float | None = None
        self.short_lived = 0  # connections in a row lost within STABLE_S of their CONNACK
        self._unretained: set[Endpoint] = set()  # brokers that keep no retained messages
        self.next_attempt = 0.0
        self.reconnects = 0
        self.connect_failures = 0

    @property
    def broker(self) -> Endpoint:
        """The broker of the next attempt (or of the live connection)."""
        return self._brokers.current

    @property
    def retains(self) -> bool:
        """False once the broker of the next attempt said it keeps no retained messages."""
        return self._brokers.current not in self._unretained

    def attempt(self) -> Attempt:
        """The MQTT version, CONNACK wait, broker, retain flag and probing of the next
        attempt (see :class:`~edge_agent.publishing.quarantine.Quarantine`)."""
        probe_s = STABLE_S if self.short_lived else 0.0
        return Attempt(self.version, self.connack_timeout, self.broker, self.retains, probe_s)

    def counts(self) -> dict[str, Any]:
        """The reconnect counters, and whether the broker keeps retained messages."""
        return {
            "retain_available": self.retains,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
        }

    def _no_retain(self) -> None:
        """The current broker keeps no retained messages: its CONNACK said Retain Available
        0, or refused our retained will (MQTT 5 reason 0x9A, "Retain not supported")."""
        where = self._brokers.current
        if where in self._unretained:
            return
        self._unretained.add(where)
        logger.warning(
            "mqtt %s: the broker keeps no retained messages (MQTT 5 Retain Available 0): the "
            "last will, availability, status, model state, counts and Home Assistant "
            "discovery go unretained, so a subscriber that comes later sees each at its "
            "next publication (Home Assistant's birth has them all sent again)",
            where,
        )

    @property
    def several(self) -> bool:
        """True with more than one broker to fail over to."""
        return len(self._brokers.endpoints) > 1

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

    def failed(
        self, reason: str, *, unanswered: bool = False, retain_refused: bool = False
    ) -> None:
        """An attempt failed; ``unanswered``: the broker took the connection but sent no
        CONNACK at all (the other MQTT version is tried next). A CONNACK refusal is not
        unanswered: the broker spoke the version, it refused the login. ``retain_refused``:
        its CONNACK refused our retained will; the same broker is tried at once without."""
        if retain_refused:
            self._no_retain()
            self.next_attempt = time.monotonic()
            return
        same_broker, tried = False, self._version_name()
        if unanswered:
            self._protocol.no_connack()
            # MQTT 5 unanswered: the same broker again with 3.1.1 before the next one.
            same_broker = self._protocol.fell_back
        self.connect_failures += 1
        where = self._brokers.current
        cycle_done = not same_broker and self._brokers.failed()
        delay = self._backoff.next() if cycle_done or len(self._brokers.endpoints) == 1 else 0.0
        self.next_attempt = time.monotonic() + delay
        logger.warning(
            "mqtt %s: cannot connect over %s (%s); trying %s over %s in %.1fs",
            where,
            tried,
            reason,
            self._brokers.current,
            self._version_name(),
            delay,
        )

    def _version_name(self) -> str:
        """ "MQTT 5" or "MQTT 3.1.1": the version of the next attempt, for the log."""
        return "MQTT 5" if self._protocol.v5 else "MQTT 3.1.1"

    def lost(self, reason: str) -> str:
        """An established connection was lost: try the next broker after the current delay.

        Returns:
            A hint ("" if none) once ``SHORT_LIVED_HINT`` connections in a row were lost
            within ``STABLE_S`` of their CONNACK; it is logged here too.
        """
        now = time.monotonic()
        stable = self._up_since is not None and now - self._up_since >= STABLE_S
        self._up_since = None
        self._brokers.lost()
        self._protocol.again()
        if stable:
            self._backoff.reset()
            self.short_lived = 0
        else:
            self.short_lived += 1
        self.next_attempt = now + self._backoff.next()
        if self.short_lived < SHORT_LIVED_HINT:
            return ""
        hint = (
            f"the broker closed {self.short_lived} connections in a row within "
            f"{STABLE_S:.0f}s of accepting them (last: {reason}): another client with the "
            f"same client id ({self._client_id or 'edge-agent-<device id>'}, two devices "
            "with one device.id)? a packet it sends on every subscribe (an oversized "
            "retained command)?"
        )
        if self.short_lived == SHORT_LIVED_HINT:
            logger.warning("mqtt %s: %s", self._brokers.current, hint)
        return hint

    def connected(self, retains: bool = True) -> bool:
        """A CONNACK (``retains``: its Retain Available): count a reconnect, say if MQTT 5
        was refused; the delay is reset once the connection has stayed up (:meth:`lost`).

        Returns:
            False when the broker keeps no retained messages.
        """
        if not retains:
            self._no_retain()
        else:  # a broker set to keep them again: the will is retained from the next one on
            self._unretained.discard(self._brokers.current)
        self._up_since = time.monotonic()
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
        return self.retains
