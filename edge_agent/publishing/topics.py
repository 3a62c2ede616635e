"""The MQTT topic layout of one device, and parsing of incoming command topics.

Layout (``prefix`` may have several levels, e.g. ``site1/edge``)::

    {prefix}/{device_id}/available     retained "online" / "offline" (LWT)
    {prefix}/{device_id}/results       inference results (durable, QoS 1 by default)
    {prefix}/{device_id}/stats         periodic statistics (best effort)
    {prefix}/{device_id}/status        retained daemon status
    {prefix}/{device_id}/model         retained model / update status
    {prefix}/{device_id}/cmd/...       commands addressed to this device
    {prefix}/group/{group}/cmd/...     commands addressed to a group of devices
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from edge_agent.errors import ConfigError

# One topic level made of characters that are safe everywhere the name ends up:
# MQTT topics (no wildcards, no "/"), Home Assistant node/object ids, file names.
_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# "group" is a level of the group command topics: a device named "group" would
# make "{prefix}/group/cmd/#" overlap with the command topic of a group named "cmd".
_RESERVED_DEVICE_IDS = frozenset({"group"})
_CMD = "cmd"
# A command every device answers by publishing its status again, live: brokers such as
# RabbitMQ 3.10 give retained messages to no wildcard subscription (``+/status``), so an
# operator discovering a group asks instead of reading retained statuses.
STATUS_REQUEST = "status/request"


def group_status_request(prefix: str, group: str) -> str:
    """``{prefix}/group/{group}/cmd/status/request``: every device of the group answers."""
    return f"{prefix}/group/{group}/{_CMD}/{STATUS_REQUEST}"


def _check_level(value: str, key: str) -> str:
    """Return value if it is one safe topic level, else raise ConfigError naming key."""
    if not isinstance(value, str) or not _LEVEL.match(value):
        raise ConfigError(
            f"expected 1-64 characters from [A-Za-z0-9_.-] starting with a letter or digit, "
            f"got {value!r}",
            key=key,
        )
    return value


def label_level(label: str) -> str:
    """A model label as one topic level: ``/``, ``+``, ``#`` and NUL become ``_``."""
    return "".join("_" if c in "/+#\0" else c for c in label) or "_"


class Topics:
    """Topic names of one device.

    Args:
        prefix: topic prefix, one or more safe levels separated by "/" (e.g. ``edge``).
        device_id: this device's id, a single safe level (not ``group``).
        groups: names of the command groups the device belongs to.
        listen: other topics to subscribe with the commands (Home Assistant's birth
            message); a message on one is passed on as a command named as its topic.

    Raises:
        ConfigError: a prefix level, the device id or a group name is not topic-safe.
    """

    def __init__(
        self, prefix: str, device_id: str, groups: Iterable[str] = (), listen: Iterable[str] = ()
    ):
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"expected a non-empty topic prefix, got {prefix!r}", key="prefix")
        for level in prefix.split("/"):
            _check_level(level, "prefix")
        _check_level(device_id, "device_id")
        if device_id in _RESERVED_DEVICE_IDS:
            raise ConfigError(f"{device_id!r} is reserved for group topics", key="device_id")
        self.prefix = prefix
        self.device_id = device_id
        self.groups: tuple[str, ...] = tuple(
            dict.fromkeys(_check_level(g, "groups") for g in groups)
        )
        self.base = f"{prefix}/{device_id}"
        self.listen: tuple[str, ...] = tuple(listen)

    def __repr__(self) -> str:
        return (
            f"Topics(prefix={self.prefix!r}, device_id={self.device_id!r}, groups={self.groups!r})"
        )

    @property
    def available(self) -> str:
        """Retained ``online``/``offline`` availability (the LWT topic)."""
        return f"{self.base}/available"

    @property
    def results(self) -> str:
        """Inference results."""
        return f"{self.base}/results"

    @property
    def stats(self) -> str:
        """Periodic statistics."""
        return f"{self.base}/stats"

    @property
    def status(self) -> str:
        """Retained daemon status."""
        return f"{self.base}/status"

    @property
    def model(self) -> str:
        """Retained model and model-update status."""
        return f"{self.base}/model"

    @property
    def events(self) -> str:
        """Object events (new / update / end), durable like results."""
        return f"{self.base}/events"

    def detect_state(self, camera: str) -> str:
        """``{camera}/detect/state``: a camera's retained detection switch state."""
        return f"{self.base}/{camera}/detect/state"

    def snapshot(self, camera: str, label: str) -> str:
        """``{camera}/{label}/snapshot``: the retained JPEG of a camera's latest ``label``
        object (``/``, ``+``, ``#`` in a label become ``_``)."""
        return f"{self.base}/{camera}/{label_level(label)}/snapshot"

    def count(self, place: str, label: str) -> str:
        """Retained number of ``label`` objects (or ``all``) seen by a camera or in a zone.

        Characters a topic level cannot hold (``/``, ``+``, ``#``) in a model's label
        become ``_``.
        """
        return f"{self.base}/{place}/{label_level(label)}"

    def command_filters(self) -> list[str]:
        """Subscription filters for every command addressed to this device.

        Returns:
            ``{prefix}/{device_id}/cmd/#`` followed by ``{prefix}/group/{g}/cmd/#``
            for each group, then the ``listen`` topics.
        """
        filters = [f"{self.base}/{_CMD}/#"]
        filters.extend(f"{self.prefix}/group/{g}/{_CMD}/#" for g in self.groups)
        filters.extend(self.listen)
        return filters

    def parse_command(self, topic: str) -> str | None:
        """Return the command name of an incoming command topic.

        Args:
            topic: the topic a message arrived on.

        Returns:
            The part after ``/cmd/`` (e.g. ``"model/update"``), a ``listen`` topic
            itself, or None when the topic is not a command for this device or one of
            its groups, or names no command.
        """
        if topic in self.listen:
            return topic
        candidates = [f"{self.base}/{_CMD}/"]
        candidates.extend(f"{self.prefix}/group/{g}/{_CMD}/" for g in self.groups)
        for head in candidates:
            if topic.startswith(head):
                name = topic[len(head) :]
                levels = name.split("/")
                if name and all(levels):
                    return name
                return None
        return None
