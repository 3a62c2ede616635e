"""A plain PUBACK handed to paho's publish callback without building its reason and
properties anew.

For every PUBACK paho builds a ``ReasonCode`` and a ``Properties``, whose constructor
fills a table of 27 property types; that was a sixth of the publisher thread's time on a
still scene, where every frame's result is a QoS 1 publish. A PUBACK without properties
(the packet id alone, success, as MQTT 3.1.1 always sends it; or with a reason code, as
an MQTT 5 broker answers "no matching subscribers" for a topic nobody reads) means the
same every time, so it gets shared, read-only ones, one per reason. A PUBACK with
properties, and every PUBCOMP, takes paho's own path.
"""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

logger = logging.getLogger(__name__)

NO_PROPERTIES = Properties(PacketTypes.PUBACK)
_REASONS = {0: ReasonCode(PacketTypes.PUBACK)}  # reason byte -> shared ReasonCode


def _reason(value: int) -> ReasonCode | None:
    """The shared ReasonCode of a PUBACK's reason byte; None for one MQTT does not define
    (paho's own path then refuses the packet)."""
    reason = _REASONS.get(value)
    if reason is None:
        try:
            reason = _REASONS[value] = ReasonCode(PacketTypes.PUBACK, identifier=value)
        except Exception:  # paho's own path then refuses it, as it always did
            return None
    return reason


def _plain(packet: bytes, protocol: int) -> ReasonCode | None:
    """The shared reason of a PUBACK's body without properties; None for any other."""
    if len(packet) == 2:  # the packet id alone: success
        return _REASONS[0]
    # MQTT 5: the packet id, a reason, and the properties' length 0 or left out.
    if protocol != mqtt.MQTTv5 or len(packet) not in (3, 4) or packet[3:] not in (b"", b"\0"):
        return None
    return _reason(packet[2])


def plain_acks(client: mqtt.Client) -> bool:
    """Give ``client`` the shortcut for PUBACKs without properties.

    It replaces paho's ``_handle_pubackcomp`` on this one client (paho's ``_in_packet``,
    ``_out_messages``, ``_out_message_mutex``, ``_do_on_publish`` and ``_protocol`` are
    used; pinned by tests/component/test_mqtt_puback.py).

    Returns:
        False on a paho these hooks do not fit, which keeps its own handling.
    """
    own = getattr(client, "_handle_pubackcomp", None)
    needed = ("_in_packet", "_out_messages", "_out_message_mutex", "_do_on_publish", "_protocol")
    if own is None or not all(hasattr(client, name) for name in needed):
        logger.debug("mqtt: this paho version keeps its own PUBACK handling")
        return False

    def handle(cmd: str) -> Any:
        packet = client._in_packet.get("packet") or b""
        reason = _plain(packet, client._protocol) if cmd == "PUBACK" else None
        if reason is None:
            return own(cmd)
        mid = int.from_bytes(packet[:2], "big")
        with client._out_message_mutex:
            if mid in client._out_messages:  # told once, as paho does
                return client._do_on_publish(mid, reason, NO_PROPERTIES)
        return mqtt.MQTT_ERR_SUCCESS

    client._handle_pubackcomp = handle
    return True
