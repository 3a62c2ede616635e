"""What reaches the owner from the broker: commands, and connection changes.

Both run in the publisher thread, from paho's callbacks: an owner's exception is logged
and swallowed here, so an MQTT callback never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge_agent.publishing.topics import STATUS_REQUEST, Topics

logger = logging.getLogger(__name__)


class Incoming:
    """Routes command messages and connection changes to the owner's callbacks.

    Args:
        topics: the device's topics (which messages are commands, and their names).
        accept_retained: run retained commands too (normally a retained command is stale
            and ignored, so it never runs again after a reconnect).
        on_command: ``on_command(name, payload, topic)``, e.g. ``("model/update", ...)``.
        on_connection_change: called with True after each CONNACK, False when lost.
        where: ``host:port`` for the log lines.
        on_status_request: called for a ``status/request`` command (not passed on).
    """

    def __init__(
        self,
        topics: Topics,
        accept_retained: bool,
        on_command: Callable[[str, bytes, str], None] | None,
        on_connection_change: Callable[[bool], None] | None,
        where: str,
        on_status_request: Callable[[], None] = lambda: None,
    ):
        self._topics = topics
        self._accept_retained = accept_retained
        self._on_command = on_command
        self._on_connection_change = on_connection_change
        self._where = where
        self._on_status_request = on_status_request
        self.commands = 0

    def message(self, msg: mqtt.MQTTMessage) -> None:
        """Dispatch a command to ``on_command``; anything else is ignored."""
        name = self._topics.parse_command(msg.topic)
        if name is None:
            logger.debug("mqtt %s: ignoring message on %s", self._where, msg.topic)
            return
        if msg.retain and not self._accept_retained:
            # A retained birth (Home Assistant set to retain it) comes at every connect,
            # when the configs go out anyway: not worth a warning each time.
            level = logging.DEBUG if msg.topic in self._topics.listen else logging.WARNING
            logger.log(level, "mqtt %s: ignoring retained message on %s", self._where, msg.topic)
            return
        self.commands += 1
        logger.info("mqtt %s: command %s from %s", self._where, name, msg.topic)
        if name == STATUS_REQUEST:
            self._on_status_request()
        elif self._on_command is not None:
            try:
                self._on_command(name, bytes(msg.payload), msg.topic)
            except Exception:
                logger.exception("mqtt %s: command %s failed", self._where, name)

    def connection(self, up: bool) -> None:
        """Tell the owner about a connection change; its errors are logged only."""
        if self._on_connection_change is not None:
            try:
                self._on_connection_change(up)
            except Exception:
                logger.exception("mqtt %s: error in on_connection_change", self._where)
