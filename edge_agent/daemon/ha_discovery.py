"""Home Assistant discovery of the running daemon: publish, clean up, answer HA's birth.

* At start and at each reload the configs the current config produces are published
  retained (at a reload only those whose payload changed, e.g. ``expire_after`` after
  a new ``stats.interval``).
* Every config topic this device published before and no longer produces (a camera
  renamed, disabled or removed, a zone or label dropped, another
  ``discovery_prefix``, ``homeassistant = false``) gets an empty retained payload,
  which is how Home Assistant deletes an entity. What was published is recorded in
  ``{state_dir}/ha_discovery.json``; without that record (first start, a new or lost
  state dir) nothing is known to delete, and stale entities must be deleted in Home
  Assistant by hand.
* Home Assistant publishes ``online`` on its birth topic when it starts (default
  ``homeassistant/status``, whatever its discovery prefix; ``{discovery_prefix}/status``
  is heard too);
  brokers that give retained messages to no wildcard subscription (RabbitMQ 3.10) do
  not hand it the retained configs, so every config is published again after a random
  delay (a fleet must not answer all at once). The states it then reads are on
  retained topics it subscribes exactly (availability, counts, detection switches);
  the status is re-published too, through ``on_republished``. On a broker that keeps no
  retained messages those states and ``online`` are sent again after the configs.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from edge_agent.atomicfile import write_atomic
from edge_agent.config import Config
from edge_agent.daemon.options import object_layout
from edge_agent.publishing.client import MqttPublisher
from edge_agent.publishing.discovery import discovery_messages
from edge_agent.publishing.settings import encode_payload
from edge_agent.publishing.topics import Topics

logger = logging.getLogger(__name__)

RECORD_NAME = "ha_discovery.json"
_BIRTH = b"online"
#: Home Assistant's birth topic by default; its own option, not its discovery prefix's.
DEFAULT_BIRTH_TOPIC = "homeassistant/status"


class Record(NamedTuple):
    """Config topics that may be retained on the broker, as recorded in the state dir.

    ``clearing`` holds stale topics whose empty payload may not have reached the broker
    yet: they are cleared again at the next start, until a clean stop while connected.
    """

    published: frozenset[str] = frozenset()
    clearing: frozenset[str] = frozenset()


def birth_filters(config: Config) -> tuple[str, ...]:
    """The topics of Home Assistant's birth message, when discovery is on.

    ``{discovery_prefix}/status`` and Home Assistant's default ``homeassistant/status``:
    its birth topic is an option of its own, which changing its discovery prefix leaves
    at the default.
    """
    if config.mqtt.enabled and config.mqtt.homeassistant:
        return tuple(dict.fromkeys((f"{config.mqtt.discovery_prefix}/status", DEFAULT_BIRTH_TOPIC)))
    return ()


def device_topics(config: Config, device_id: str) -> Topics:
    """The device's topics; Home Assistant's birth topic is subscribed with the commands."""
    return Topics(config.mqtt.prefix, device_id, config.device.groups, birth_filters(config))


def entity_messages(config: Config, topics: Topics, *, events: bool) -> list[tuple[str, dict]]:
    """Every discovery ``(topic, payload)`` the config makes; none with Home Assistant off.

    Args:
        events: the object layer runs (occupancy and count entities).

    Raises:
        ConfigError: the config makes two entities share one discovery topic.
    """
    if not config.mqtt.homeassistant:
        return []
    return discovery_messages(
        topics,
        discovery_prefix=config.mqtt.discovery_prefix,
        stats_interval=config.stats.interval,
        objects=object_layout(config, events=events),
    )


def read_record(path: Path) -> Record:
    """The recorded topics; an empty record when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Record(
            frozenset(str(t) for t in data["published"]),
            frozenset(str(t) for t in data.get("clearing", ())),
        )
    except FileNotFoundError:
        return Record()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning(
            "%s: unreadable (%s); Home Assistant entities published before cannot be "
            "removed automatically",
            path,
            exc,
        )
        return Record()


def write_record(path: Path, record: Record) -> None:
    """Record the topics (atomically); an error is logged: cleanup is best effort."""
    data = {"published": sorted(record.published), "clearing": sorted(record.clearing)}
    try:
        write_atomic(path, json.dumps(data, indent=1).encode("utf-8"))
    except OSError as exc:
        logger.error(
            "%s: %s; stale Home Assistant entities will not be removed after the next "
            "config change",
            path,
            exc.strerror or exc,
        )


def stale_topics(record: Record, produced: set[str] | frozenset[str]) -> frozenset[str]:
    """Recorded topics the current config no longer produces."""
    return (record.published | record.clearing) - frozenset(produced)


class HaDiscovery:
    """Publishes the discovery configs of one daemon and removes the stale ones.

    Args:
        publisher: the running publisher (thread-safe ``publish``).
        topics: the device's topics.
        config: the config at start (its ``device.state_dir`` keeps the record).
        on_republished: called after a re-publication for Home Assistant's birth.
        max_delay: the birth answer waits a random 0.5..``max_delay`` seconds.
    """

    def __init__(
        self,
        publisher: MqttPublisher,
        topics: Topics,
        config: Config,
        on_republished: Callable[[], None] | None = None,
        *,
        max_delay: float = 5.0,
    ):
        self._publisher, self._topics = publisher, topics
        self._path = Path(config.device.state_dir) / RECORD_NAME
        self._on_republished = on_republished
        self._max_delay = max_delay
        self._lock = threading.Lock()
        self._sent: dict[str, bytes] = {}
        self._clearing: frozenset[str] = frozenset()
        self._birth_topics: tuple[str, ...] = ()
        self._timer: threading.Timer | None = None

    def publish(self, config: Config, *, events: bool) -> None:
        """Publish what changed since the last call and clear what is no longer produced.

        Raises:
            ConfigError: the config makes two entities share one discovery topic.
        """
        messages = entity_messages(config, self._topics, events=events)
        self._birth_topics = birth_filters(config)
        payloads = {topic: encode_payload(topic, p) for topic, p in messages}  # as sent
        with self._lock:
            record = read_record(self._path) if not self._sent else Record(frozenset(self._sent))
            stale = stale_topics(record, payloads.keys()) | (self._clearing - payloads.keys())
            # Recorded before anything is sent: a crash now still knows what to clear.
            self._clearing = frozenset(stale)
            new_record = Record(frozenset(payloads), self._clearing)
            if new_record != record:
                write_record(self._path, new_record)
            for topic in sorted(stale):
                self._publisher.publish(topic, b"", qos=1, retain=True)
            changed = {t: p for t, p in payloads.items() if self._sent.get(t) != p}
            self._sent = payloads
            # Under the lock: a birth answer on the timer thread must not send an older
            # payload after this one (the broker keeps the last retained one).
            for topic, payload in changed.items():
                self._publisher.publish(topic, payload, qos=1, retain=True)
        if stale or changed:
            logger.info(
                "home assistant discovery: %d configs published, %d stale removed",
                len(changed),
                len(stale),
            )

    def close(self) -> None:
        """At stop: cancel a pending birth answer; forget the cleared topics when the
        publisher is connected (it sends retained values first, before it disconnects)."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            timer.join(2.0)  # an answer already running finishes (it only queues messages)
        with self._lock:
            if self._clearing and self._publisher.connected:
                self._clearing = frozenset()
                write_record(self._path, Record(frozenset(self._sent)))

    def handle(self, topic: str, payload: bytes) -> bool:
        """Take Home Assistant's birth message (True), or leave another topic (False)."""
        if topic not in self._birth_topics:
            return False
        if payload.strip() != _BIRTH:
            return True  # "offline": Home Assistant stops; nothing to do
        with self._lock:
            if self._timer is not None:
                return True  # an answer is already scheduled
            delay = random.uniform(min(0.5, self._max_delay), self._max_delay)
            self._timer = threading.Timer(delay, self._republish)
            self._timer.daemon = True
            self._timer.start()
        logger.info("home assistant came online: discovery again in %.1fs", delay)
        return True

    def _republish(self) -> None:
        """Timer thread: every config again (retained, so the broker keeps the latest)."""
        with self._lock:  # see publish(): a reload's newer payloads go after these
            self._timer = None
            for topic, payload in self._sent.items():
                self._publisher.publish(topic, payload, qos=1, retain=True)
            self._publisher.republish_latest()  # no retained messages: states and online
        if self._on_republished is not None:
            self._on_republished()
