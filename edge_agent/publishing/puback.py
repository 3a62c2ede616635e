"""A plain PUBACK handed to paho's publish callback without building its reason and
properties anew.

For every PUBACK paho builds a ``ReasonCode`` and a ``Properties``, whose constructor
fills a table of 27 property types; that was a sixth of the publisher thread's time on a
still scene, where every frame's result is a QoS 1 publish. A PUBACK of two bytes (the
packet id alone: success, no properties, as MQTT 3.1.1 always and MQTT 5 brokers mostly
send it) means the same every time, so it gets shared, read-only ones. Any longer PUBACK
(a reason code, properties), and every PUBCOMP, takes paho's own path.
"""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

logger = logging.getLogger(__name__)

SUCCESS = ReasonCode(PacketTypes.PUBACK)  # value 0: Success
NO_PROPERTIES = Properties(PacketTypes.PUBACK)


def plain_acks(client: mqtt.Client) -> bool:
    """Give ``client`` the shortcut for two-byte PUBACKs.

    It replaces paho's ``_handle_pubackcomp`` on this one client (paho's
    ``_in_packet``, ``_out_messages``, ``_out_message_mutex`` and ``_do_on_publish`` are
    used; pinned by tests/component/test_mqtt_puback.py).

    Returns:
        False on a paho these hooks do not fit, which keeps its own handling.
    """
    own = getattr(client, "_handle_pubackcomp", None)
    needed = ("_in_packet", "_out_messages", "_out_message_mutex", "_do_on_publish")
    if own is None or not all(hasattr(client, name) for name in needed):
        logger.debug("mqtt: this paho version keeps its own PUBACK handling")
        return False

    def handle(cmd: str) -> Any:
        packet = client._in_packet.get("packet")
        if cmd != "PUBACK" or len(packet or b"") != 2:
            return own(cmd)
        mid = int.from_bytes(packet, "big")
        with client._out_message_mutex:
            if mid in client._out_messages:  # told once, as paho does
                return client._do_on_publish(mid, SUCCESS, NO_PROPERTIES)
        return mqtt.MQTT_ERR_SUCCESS

    client._handle_pubackcomp = handle
    return True
