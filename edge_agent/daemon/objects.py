"""The daemon's object layer: per camera, a tracker, zones, events and counts.

Called by the pipeline thread for every processed frame (it owns this object's state;
no lock is needed), it turns the frame's results into object events (published durable,
QoS 1, spooled through an outage like results), retained counts published only when
they change, so consumers such as Home Assistant see one message per change, never one
per frame, and snapshots of each object's best frame (see :mod:`.snapshots`).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_agent.config import Config
from edge_agent.daemon.count_record import CountRecord
from edge_agent.daemon.snapshot_store import SnapshotStore
from edge_agent.daemon.snapshots import Snapshot, SnapshotWriter, keep
from edge_agent.inference.postprocess import Result
from edge_agent.publishing.topics import Topics
from edge_agent.tracking.events import (
    CountKey,
    EventEmitter,
    EventSettings,
    EventType,
    ObjectEvent,
    PresenceCounts,
    classification_detections,
)
from edge_agent.tracking.tracker import (
    Detection,
    Tracker,
    TrackerSettings,
    TrackRule,
    TrackState,
)
from edge_agent.tracking.zones import Anchor, Zone, ZoneMembership, scaled

logger = logging.getLogger(__name__)

MAX_KEPT = 16  # open objects whose best frame is kept, per camera (bounds memory)
# A camera that gave no frame for this long (seconds of its own capture clock), and for
# IDLE_GAPS times its usual interval between frames, is not just between frames: its
# objects age on the wall clock (see ObjectService.expire). The usual interval counts: a
# camera at 0.5 fps, or one a busy pipeline gets to every 2 s, is matched frame to frame
# however long max_age is, so ending its objects between frames would end them all.
IDLE_AFTER = 1.0
IDLE_GAPS = 3.0
GAPS_KEPT = 9  # recent intervals whose median is the usual one (an outage's gap is one)
# The wall clock moving this much against the monotonic one between two frames was set
# (NTP on a box without RTC, an operator), not slewed: object times follow the step.
CLOCK_STEP_S = 0.5

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


def zone_of(cfg: Any) -> Zone:
    """A ``[[zone]]`` table as the tracker's Zone (in its configured units)."""
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
        self.best: dict[int, Snapshot] = {}  # track id -> its best frame so far
        self.sent: dict[int, float] = {}  # track id -> score of the snapshot published
        self.last_frame = 0.0  # capture time of the latest frame
        self.gaps: deque[float] = deque(maxlen=GAPS_KEPT)  # recent intervals between frames

    def seen_at(self, timestamp: float) -> None:
        """Note a frame captured at ``timestamp`` (its interval from the latest one)."""
        if self.last_frame and timestamp > self.last_frame:
            self.gaps.append(timestamp - self.last_frame)
        self.last_frame = max(self.last_frame, timestamp)

    def idle(self, now: float) -> bool:
        """Whether the camera is overdue at ``now``: no frame for ``IDLE_AFTER`` s and for
        ``IDLE_GAPS`` times its usual interval between frames."""
        usual = statistics.median(self.gaps) if self.gaps else 0.0
        return now - self.last_frame >= max(IDLE_AFTER, IDLE_GAPS * usual)

    def fit(self, size: tuple[int, int]) -> None:
        """Scale relative zones to the frame size; when the camera's size changes (a mode
        sized to a new model, a stream's new resolution), its objects carry over."""
        if size == self.size:
            return
        old, self.size = self.size, size
        pixels = [scaled(z, *size) if rel else z for z, rel in zip(self.zones, self.relative)]
        self.members.rezone(pixels)
        if old is not None:
            self.tracker.rescale(size[0] / old[0], size[1] / old[1])


class ObjectService:
    """Tracks the objects of every camera and publishes their events and counts.

    Args:
        config: the daemon's configuration (``[events]``, ``[[track]]``, ``[[zone]]``).
        topics: the device's topics.
        publish: queues one message (never blocks, never raises for the broker).
        record: the count topics an earlier run published (see :mod:`.count_record`);
            at start, every camera's counts and every recorded topic read 0.
        threshold: ``model.threshold`` now (a reload changes it; read at each frame).
    """

    def __init__(
        self,
        config: Config,
        topics: Topics,
        publish: Publish,
        record: CountRecord | None = None,
        threshold: Callable[[], float] | None = None,
    ):
        self._config = config
        self._threshold = threshold or (lambda: config.model.threshold)
        self._topics = topics
        self._publish = publish
        self._cameras: dict[str, _Camera] = {}
        self._record = record
        self._clock = time.time() - time.monotonic()  # see _follow_clock
        self.events = 0
        ev = config.events
        self._snapshots: SnapshotWriter | None = None
        if ev.snapshots:
            self._snapshots = SnapshotWriter(
                topics,
                lambda topic, jpeg: publish(topic, jpeg, 1, True, False),
                crop=ev.snapshot_crop,
                quality=ev.snapshot_quality,
                # Each camera's kept objects may all wait at once (confirmed together).
                depth=MAX_KEPT * max(1, len(config.enabled_cameras)),
                store=SnapshotStore(
                    os.path.join(config.device.state_dir, "snapshots"),
                    int(ev.snapshot_max_disk_mb * 1024 * 1024),
                )
                if ev.snapshot_keep_on_disk
                else None,
            )
            self._snapshots.start()
        if record is not None:
            self._reset_counts(record)

    def _reset_counts(self, record: CountRecord) -> None:
        """0 on every count now, not at a camera's first frame (a camera still down
        must not show what a killed run left), and on every topic an earlier run
        counted on that this config does not (another label, a zone removed)."""
        sent = set()
        for camera in self._config.enabled_cameras:
            cam = self._camera(camera.name)
            sent.update(self._send_counts(cam.name, cam.counts.update((), cam.members)))
        for topic in sorted(record.topics - sent):
            self._publish(topic, b"0", 1, True, False)

    def _camera(self, name: str) -> _Camera:
        cam = self._cameras.get(name)
        if cam is None:
            zones = [zone_of(z) for z in self._config.zone if z.camera == name]
            cam = self._cameras[name] = _Camera(name, self._config, zones)
        return cam

    def on_frame(
        self,
        camera: str,
        timestamp: float,
        results: Sequence[Result],
        size: tuple[int, int],
        classification: bool,
        image: np.ndarray | None = None,
    ) -> None:
        """Take one processed frame: update the tracks, publish events and count changes.

        Args:
            camera: the camera's name.
            timestamp: capture time, seconds since the epoch.
            results: the frame's results (boxes in frame pixels for detections).
            size: the frame's (width, height).
            classification: the model is a classifier (its top-1 label is the object).
            image: the frame (read only here; copied only when a best score improves).
        """
        self._follow_clock()
        cam = self._camera(camera)
        cam.fit(size)
        # In capture order: a frame taken before the clock was set forward is not older
        # than the objects' times, which moved with the clock.
        timestamp = max(timestamp, cam.last_frame)
        cam.seen_at(timestamp)
        if cam.emitter.settings.boxes == classification:  # a model switch may change it
            # A classifier's object is the whole frame: its events carry no box.
            cam.emitter.settings = cam.emitter.settings._replace(boxes=not classification)
        threshold = self._threshold()
        if cam.tracker.settings.high_score != threshold:  # reloaded: as results are decoded
            cam.tracker.settings = cam.tracker.settings._replace(
                high_score=threshold, low_score=threshold
            )
        if classification:
            dets = classification_detections(results, threshold)
        else:
            dets = [Detection(r.label, r.score, r.box) for r in results if r.box is not None]
        step = cam.tracker.update(dets, timestamp)
        # A classifier does not say where its label is: its object is in no zone. An
        # object unseen in this frame stays as it was (its old box proves nothing now).
        seen = () if classification else [t for t in step.active if t.track_id in step.matched]
        cam.members.update(seen, step.ended)
        if self._snapshots is not None and image is not None and not classification:
            self._keep_best(cam, step.active, step.matched, image)
        events = cam.emitter.step(step, timestamp, cam.members, snapshots=cam.best)
        self._send_step(cam, events, step.active)

    def _keep_best(
        self, cam: _Camera, active: Sequence[TrackState], seen: frozenset[int], image: Any
    ) -> None:
        """Copy the frame for the tracks whose best score is this frame's."""
        width = self._config.events.snapshot_width
        for track in active:
            if track.track_id not in seen:
                continue
            kept = cam.best.get(track.track_id)
            if kept is None:
                # A new object: this frame, even if a tentative one scored higher (that
                # frame is gone); the first copy is what its "new" event shows.
                if len(cam.best) >= MAX_KEPT:
                    continue
            elif track.score < track.top_score or track.score < kept.score + 0.02:
                continue  # not its best frame, or not better enough to pay for a copy
            cam.best[track.track_id] = keep(
                cam.name, track.label, track.track_id, track.score, track.box, image, width
            )

    def _send_snapshots(self, cam: _Camera, events: Sequence[ObjectEvent]) -> None:
        """Publish a track's best frame with its events, when it is better than the last."""
        if self._snapshots is None:
            return
        for event in events:
            kept = cam.best.get(event.track_id)
            if kept is not None and kept.score > cam.sent.get(event.track_id, -1.0):
                if self._record is not None:  # before it goes out, as counts are
                    self._record.add_retained([self._topics.snapshot(cam.name, kept.label)])
                self._snapshots.submit(kept._replace(event_id=event.id))
                cam.sent[event.track_id] = kept.score
            if event.type is EventType.END:
                cam.best.pop(event.track_id, None)
                cam.sent.pop(event.track_id, None)

    def expire(self, camera: str, now: float) -> None:
        """Age a camera's objects when it gives no frames (stream down, file ended, model
        not running): without this, what it saw last would stay present, its events open
        and its occupancy ON until a frame came. Objects unseen for their ``max_age`` at
        ``now`` (wall clock, as capture times) end as the next frame would end them.

        Args:
            camera: the camera's name.
            now: the time, seconds since the epoch; nothing happens while the camera is
                between frames (see ``_Camera.idle``: within ``IDLE_AFTER`` s of its
                latest frame, or ``IDLE_GAPS`` times its usual interval).
        """
        self._follow_clock()
        cam = self._cameras.get(camera)
        if cam is None or not cam.idle(now):
            return
        step = cam.tracker.update((), now)
        if not step.ended:
            return
        # Nothing was seen: zone streaks and event updates wait for a real frame.
        cam.members.update((), step.ended)
        self._send_step(cam, cam.emitter.end_all(step.ended, snapshots=cam.best), step.active)

    def _follow_clock(self) -> None:
        """Move every object's times with a step of the wall clock: set back an hour,
        objects would stay present for that hour and end before they started; set
        forward, an object missed in one frame would end as unseen for that long."""
        clock = time.time() - time.monotonic()
        step, self._clock = clock - self._clock, clock
        if abs(step) < CLOCK_STEP_S:
            return
        logger.warning("the wall clock was set by %+.1fs: object times follow it", step)
        for cam in self._cameras.values():
            cam.tracker.shift(step)
            cam.emitter.shift(step)
            cam.last_frame += step if cam.last_frame else 0.0

    def close(self, timeout: float = 2.0) -> None:
        """End every open event (shutdown: nothing is observed any more), zero the
        counts, and publish the last snapshots (bounded by ``timeout``)."""
        for cam in self._cameras.values():
            self._send_step(cam, cam.emitter.end_all(cam.tracker.end_all(), snapshots=cam.best), ())
        if self._snapshots is not None:
            self._snapshots.stop(timeout)

    def _send_events(self, events: Sequence[ObjectEvent]) -> None:
        for event in events:
            payload = json.dumps(event.to_json(), separators=(",", ":")).encode()
            self._publish(self._topics.events, payload, 1, False, True)
            self.events += 1

    def _send_step(
        self, cam: _Camera, events: Sequence[ObjectEvent], active: Sequence[TrackState]
    ) -> None:
        """Publish what a tracker step changed: its events, their snapshots, the counts."""
        self._send_events(events)
        self._send_snapshots(cam, events)
        self._send_counts(cam.name, cam.counts.update(active, cam.members))

    def _send_counts(self, camera: str, changes: dict[CountKey, int]) -> list[str]:
        """Publish count changes (retained); returns their topics."""
        sends = [(self._topics.count(k.zone or camera, k.label), n) for k, n in changes.items()]
        if self._record is not None:
            # Recorded before it goes out: a count on the broker is one a restart resets.
            self._record.add(topic for topic, count in sends if count)
        for topic, count in sends:
            self._publish(topic, str(count).encode(), 1, True, False)
        return [topic for topic, _ in sends]


def start_objects(
    config: Config,
    topics: Topics,
    publish: Publish,
    threshold: Callable[[], float] | None = None,
) -> ObjectService | None:
    """The object layer, or None with ``events.enabled = false``; ``threshold`` gives
    ``model.threshold`` as a reload leaves it.

    Either way the count topics an earlier run made non-zero (``counts.json``) read 0 at
    start: a run killed with an object in view left its count retained on the broker,
    and a run with events off publishes no count of its own that would replace it. And
    the retained snapshots and detection switch states of a camera removed or renamed,
    and every snapshot with snapshots or events off, are cleared.
    """
    record = CountRecord(config.device.state_dir)
    cameras = [c.name for c in config.enabled_cameras]
    record.add_retained(topics.detect_state(c) for c in cameras)
    ev = config.events
    made = [f"{topics.base}/{c}/" for c in cameras]
    record.clear_retained(publish, made, ev.enabled and ev.snapshots)
    if ev.enabled:
        return ObjectService(config, topics, publish, record, threshold)
    for topic in sorted(record.topics):
        publish(topic, b"0", 1, True, False)
    return None
