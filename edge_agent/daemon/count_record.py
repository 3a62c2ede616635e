"""The count topics this device ever published a non-zero count on, kept across lives.

Counts are retained. A clean stop publishes 0 on every count it changed, but a daemon
killed (SIGKILL, a power cut, the watchdog) leaves its last counts on the broker: a
``front/person`` of 1 would read 1 until a person came and left again, even after
the restart. At start the daemon publishes 0 on every topic recorded here (in
``{state_dir}/counts.json``), which it could not know otherwise: a label outside
``events.labels``, a zone removed from the config meanwhile.

A topic is added the first time its count is not 0 and never removed, so the file is
written once per new topic, not at every change (an SD card's flash wears). The other
retained topics of a camera, its snapshots (``{camera}/{label}/snapshot``) and its
detection switch state (``{camera}/detect/state``), are recorded the same way, so that
every start whose config does not make one (the camera removed, renamed or disabled;
for snapshots, snapshots or events off) clears it with an empty retained message.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable

from edge_agent.atomicfile import write_atomic

logger = logging.getLogger(__name__)

RECORD_NAME = "counts.json"
DETECT_STATE = "/detect/state"  # a camera's switch state (the rest are snapshots)
# publish(topic, payload, qos, retain, durable)
Clear = Callable[[str, bytes, int, bool, bool], None]


class CountRecord:
    """The recorded count and snapshot topics of one device.

    Args:
        state_dir: where ``counts.json`` is kept.
    """

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, RECORD_NAME)
        # count topics; a camera's other retained topics (cleared while none makes them)
        self.topics, self.retained = self._load()
        self._failed = False  # a write error is logged once, not at every new topic

    def _load(self) -> tuple[frozenset[str], frozenset[str]]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                doc = json.load(fh)
            topics, retained = doc["topics"], doc.get("retained", [])
            if not isinstance(topics, list) or not isinstance(retained, list):
                raise TypeError("topics and retained must be lists of topics")
            # Only what the daemon could have written: a wildcard or an empty level
            # cannot be published to (a file edited by hand must not stop the start).
            return _topics(topics), _topics(retained)
        except FileNotFoundError:
            return frozenset(), frozenset()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning(
                "%s: unreadable (%s); counts left by an earlier run outside events.labels "
                "are not reset",
                self.path,
                exc,
            )
            return frozenset(), frozenset()

    def add(self, topics: Iterable[str]) -> None:
        """Record ``topics`` (those with a count other than 0); written when one is new."""
        new = frozenset(topics) - self.topics
        if new:
            self.topics |= new
            self._write()

    def add_retained(self, topics: Iterable[str]) -> None:
        """Record a camera's retained topics before they go out (written when one is new)."""
        new = frozenset(topics) - self.retained
        if new:
            self.retained |= new
            self._write()

    def clear_retained(self, publish: Clear, cameras: Iterable[str], snapshots: bool) -> None:
        """Clear (an empty retained message) every recorded retained topic this start does
        not make: any of a camera not in ``cameras`` (``{base}/{camera}/``), and every
        snapshot unless ``snapshots``."""
        made = tuple(cameras)
        for topic in sorted(self.retained):
            state = topic.endswith(DETECT_STATE)
            if not topic.startswith(made) or not (snapshots or state):
                publish(topic, b"", 1, True, False)

    def _write(self) -> None:
        doc = {"topics": sorted(self.topics), "retained": sorted(self.retained)}
        try:
            write_atomic(self.path, json.dumps(doc, indent=1).encode("utf-8"))
        except OSError as exc:
            if not self._failed:
                logger.error(
                    "%s: %s; after a crash, its counts may stay at their last value",
                    self.path,
                    exc.strerror or exc,
                )
            self._failed = True


def _topics(listed: list) -> frozenset[str]:
    """The publishable topics of a list read from the file."""
    return frozenset(t for t in listed if isinstance(t, str) and _publishable(t))


def _publishable(topic: str) -> bool:
    """A topic one may publish a count on: levels non-empty, no wildcard, no NUL."""
    return bool(topic) and not any(c in topic for c in "+#\0") and "" not in topic.split("/")
