"""The daemon's object layer: per camera, a tracker, zones, events and counts.

Called by the pipeline thread for every processed frame (it owns this object's state;
no lock is needed), it turns the frame's results into object events (published durable,
QoS 1, spooled through an outage like results) and retained counts published only when
they change, so consumers such as Home Assistant see one message per change, never one
per frame.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from edge_agent.config import Config
from edge_agent.inference.postprocess import Result
from edge_agent.publishing.topics import Topics
from edge_agent.tracking.events import (
    CountKey,
    EventEmitter,
    EventSettings,
    ObjectEvent,
    PresenceCounts,
    classification_detections,
)
from edge_agent.tracking.tracker import Detection, Tracker, TrackerSettings, TrackRule
from edge_agent.tracking.zones import Anchor, Zone, ZoneMembership, scaled

logger = logging.getLogger(__name__)

# publish(topic, payload, qos, retain, durable)
Publish = Callable[[str, bytes, int, bool, bool], None]


def tracker_settings(config: Config) -> TrackerSettings:
    """The ``[events]`` and ``[[track]]`` tables as tracker settings.

    Only detections the model reported (at or above ``model.threshold``) reach the
    tracker, so both association stages use that threshold.
    """
    ev = config.events
    threshold = config.model.threshold
    return TrackerSettings(
        match_iou=ev.match_iou,
        high_score=threshold,
        low_score=threshold,
        predict=ev.predict,
        rule=TrackRule(ev.min_hits, ev.max_age),
        rules={t.label: TrackRule(t.min_hits, t.max_age) for t in config.track},
    )


def _zone(cfg: Any) -> Zone:
    return Zone(
        cfg.name,
        tuple((float(x), float(y)) for x, y in cfg.points),
        frozenset(cfg.labels),
        cfg.min_frames,
        Anchor(cfg.anchor),
    )


class _Camera:
    """One camera's tracker, zones, events and counts."""

    def __init__(self, name: str, config: Config, zones: Sequence[Zone]):
        self.name = name
        self.tracker = Tracker(tracker_settings(config))
        self.zones = list(zones)
        self.relative = [all(0 <= v <= 1 for p in z.polygon for v in p) for z in zones]
        self.size: tuple[int, int] | None = None
        self.members = ZoneMembership(())
        self.emitter = EventEmitter(name, EventSettings(config.events.update_interval))
        self.counts = PresenceCounts(config.events.labels, [z.name for z in zones])

    def fit(self, size: tuple[int, int]) -> None:
        """Scale relative zones to the frame size (again when the camera's size changes)."""
        if size == self.size:
            return
        self.size = size
        pixels = [scaled(z, *size) if rel else z for z, rel in zip(self.zones, self.relative)]
        self.members = ZoneMembership(pixels)


class ObjectService:
    """Tracks the objects of every camera and publishes their events and counts.

    Args:
        config: the daemon's configuration (``[events]``, ``[[track]]``, ``[[zone]]``).
        topics: the device's topics.
        publish: queues one message (never blocks, never raises for the broker).
    """

    def __init__(self, config: Config, topics: Topics, publish: Publish):
        self._config = config
        self._topics = topics
        self._publish = publish
        self._cameras: dict[str, _Camera] = {}
        self.events = 0

    def _camera(self, name: str) -> _Camera:
        cam = self._cameras.get(name)
        if cam is None:
            zones = [_zone(z) for z in self._config.zone if z.camera == name]
            cam = self._cameras[name] = _Camera(name, self._config, zones)
        return cam

    def on_frame(
        self,
        camera: str,
        timestamp: float,
        results: Sequence[Result],
        size: tuple[int, int],
        classification: bool,
    ) -> None:
        """Take one processed frame: update the tracks, publish events and count changes.

        Args:
            camera: the camera's name.
            timestamp: capture time, seconds since the epoch.
            results: the frame's results (boxes in frame pixels for detections).
            size: the frame's (width, height).
            classification: the model is a classifier (its top-1 label is the object).
        """
        cam = self._camera(camera)
        cam.fit(size)
        if classification:
            dets = classification_detections(results, self._config.model.threshold)
        else:
            dets = [Detection(r.label, r.score, r.box) for r in results if r.box is not None]
        step = cam.tracker.update(dets, timestamp)
        cam.members.update(step.active, step.ended)
        self._send_events(cam.emitter.step(step, timestamp, cam.members))
        self._send_counts(cam.name, cam.counts.update(step.active, cam.members))

    def close(self) -> None:
        """End every open event (shutdown: nothing is observed any more) and zero counts."""
        for cam in self._cameras.values():
            self._send_events(cam.emitter.end_all(cam.tracker.end_all()))
            self._send_counts(cam.name, cam.counts.update((), cam.members))

    def _send_events(self, events: Sequence[ObjectEvent]) -> None:
        for event in events:
            payload = json.dumps(event.to_json(), separators=(",", ":")).encode()
            self._publish(self._topics.events, payload, 1, False, True)
            self.events += 1

    def _send_counts(self, camera: str, changes: dict[CountKey, int]) -> None:
        for key, count in changes.items():
            topic = self._topics.count(key.zone or camera, key.label)
            self._publish(topic, str(count).encode(), 1, True, False)
