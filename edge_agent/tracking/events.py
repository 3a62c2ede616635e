"""Object events (``new`` / ``update`` / ``end``) and per-label presence counts.

Events follow tracks: ``new`` when a track is confirmed, ``update`` when its zones change
(at once) or its best score improves (at most every ``update_interval`` seconds), ``end``
when the track ends. An event id is the start time plus random letters, like Frigate's,
so it stays unique across restarts without any state on disk.

Counts are the number of confirmed objects per label, per camera and per zone; only
the counts that changed since the last frame are returned, so a consumer (and Home
Assistant's recorder) sees a message per change, never one per frame.
"""

from __future__ import annotations

import enum
import secrets
import string
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, NamedTuple

from edge_agent.tracking.tracker import Box, Detection, TrackerStep, TrackState
from edge_agent.tracking.zones import ZoneMembership

FULL_FRAME: Box = (0.0, 0.0, 1.0, 1.0)
_ID_ALPHABET = string.ascii_lowercase + string.digits


class EventType(enum.Enum):
    """The life of an object event."""

    NEW = "new"
    UPDATE = "update"
    END = "end"


class ObjectEvent(NamedTuple):
    """One event message (see :meth:`to_json` for the published payload)."""

    type: EventType
    id: str
    camera: str
    label: str
    track_id: int
    start_time: float
    end_time: float | None
    score: float
    box: Box | None
    top_score: float
    top_box: Box | None
    zones: tuple[str, ...]  # the zones the object is in now
    entered_zones: tuple[str, ...]  # every zone it entered, in order
    has_snapshot: bool

    def to_json(self) -> dict[str, Any]:
        """The ``events`` payload."""

        def box(b: Box | None) -> list[float] | None:
            return None if b is None else [round(v, 1) for v in b]

        return {
            "type": self.type.value,
            "id": self.id,
            "camera": self.camera,
            "label": self.label,
            "track_id": self.track_id,
            "start_time": round(self.start_time, 3),
            "end_time": None if self.end_time is None else round(self.end_time, 3),
            "score": round(self.score, 5),
            "box": box(self.box),
            "top_score": round(self.top_score, 5),
            "top_box": box(self.top_box),
            "zones": list(self.zones),
            "entered_zones": list(self.entered_zones),
            "has_snapshot": self.has_snapshot,
        }


class EventSettings(NamedTuple):
    """How often an open event is updated."""

    update_interval: float = 5.0  # seconds between score updates of one event
    score_step: float = 0.02  # a best score must improve by this much to be news
    boxes: bool = True  # False for classification: the "box" is the whole frame


def new_event_id(start_time: float) -> str:
    """``<start time>-<6 random letters>``: unique across restarts and devices."""
    suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
    return f"{start_time:.6f}-{suffix}"


def classification_detections(results: Sequence[Any], threshold: float) -> list[Detection]:
    """A classifier's "object": its top-1 label at or above ``threshold``, whole frame.

    Fed to a :class:`~edge_agent.tracking.tracker.Tracker`, the constant box makes the
    label's track persist while it stays top-1, so ``min_hits`` and ``max_age`` give the
    label hysteresis: a new label needs ``min_hits`` frames to start, the old one ends
    only after ``max_age`` seconds without being top-1.
    """
    if not results:
        return []
    top = max(results, key=lambda r: r.score)
    return [Detection(top.label, top.score, FULL_FRAME)] if top.score >= threshold else []


class _Open(NamedTuple):
    id: str
    entered: tuple[str, ...]
    zones: frozenset[str]
    reported_top: float
    last_update: float


class EventEmitter:
    """Turns one camera's tracker steps into object events.

    Args:
        camera: the camera's name.
        settings: update pacing.
        make_id: event id factory (injectable for tests).
    """

    def __init__(
        self,
        camera: str,
        settings: EventSettings | None = None,
        make_id: Callable[[float], str] = new_event_id,
    ):
        self.camera = camera
        self.settings = settings or EventSettings()
        self._make_id = make_id
        self._open: dict[int, _Open] = {}

    def step(
        self,
        step: TrackerStep,
        t: float,
        zones: ZoneMembership | None = None,
        snapshots: Collection[int] = (),
    ) -> list[ObjectEvent]:
        """The events of one frame at time ``t``.

        Args:
            step: what the tracker made of the frame.
            t: the frame's capture time (seconds since the epoch).
            zones: zone membership, already updated with this frame.
            snapshots: ids of the tracks that have a snapshot.
        """
        events: list[ObjectEvent] = []
        started = {tr.track_id for tr in step.started}
        for track in step.active:
            now_in = zones.zones_of(track.track_id) if zones else frozenset()
            if track.track_id in started:
                entered = tuple(sorted(now_in))
                self._open[track.track_id] = _Open(
                    self._make_id(track.first_seen), entered, now_in, track.top_score, t
                )
                events.append(self._event(EventType.NEW, track, None, snapshots))
                continue
            state = self._open.get(track.track_id)
            if state is None:
                continue
            zone_change = now_in != state.zones
            better = track.top_score >= state.reported_top + self.settings.score_step
            due = t - state.last_update >= self.settings.update_interval
            if zone_change or (better and due):
                new_zones = tuple(z for z in sorted(now_in) if z not in state.entered)
                self._open[track.track_id] = _Open(
                    state.id, state.entered + new_zones, now_in, track.top_score, t
                )
                events.append(self._event(EventType.UPDATE, track, None, snapshots))
        for track in step.ended:
            if track.track_id in self._open:
                events.append(self._event(EventType.END, track, track.last_seen, snapshots))
                del self._open[track.track_id]
        return events

    def _event(
        self,
        kind: EventType,
        track: TrackState,
        end_time: float | None,
        snapshots: Collection[int],
    ) -> ObjectEvent:
        state = self._open[track.track_id]
        boxes = self.settings.boxes
        return ObjectEvent(
            kind,
            state.id,
            self.camera,
            track.label,
            track.track_id,
            track.first_seen,
            end_time,
            track.score,
            track.box if boxes else None,
            track.top_score,
            track.top_box if boxes else None,
            tuple(sorted(state.zones)) if kind is not EventType.END else (),
            state.entered,
            track.track_id in snapshots,
        )

    def shift(self, dt: float) -> None:
        """Move the open events' last update times by ``dt`` seconds (the wall clock was
        set), so their updates keep their pace."""
        self._open = {k: e._replace(last_update=e.last_update + dt) for k, e in self._open.items()}

    def end_all(
        self, ended: Iterable[TrackState], snapshots: Collection[int] = ()
    ) -> list[ObjectEvent]:
        """``end`` events for tracks ended outside a frame (detection off, shutdown)."""
        out = []
        for track in ended:
            if track.track_id in self._open:
                out.append(self._event(EventType.END, track, track.last_seen, snapshots))
                del self._open[track.track_id]
        return out


class CountKey(NamedTuple):
    """What a count is of: a label (or ``all``) in the whole view or in one zone."""

    zone: str | None
    label: str


class PresenceCounts:
    """Objects present per label (and in total), per camera and per zone.

    Args:
        labels: labels always reported (0 included), e.g. the configured ones.
        zones: zone names always reported.
    """

    ALL = "all"

    def __init__(self, labels: Iterable[str] = (), zones: Iterable[str] = ()):
        self._labels = tuple(labels)
        self._zones = tuple(zones)
        self._last: dict[CountKey, int] = {}
        self._zero = {
            CountKey(where, label): 0
            for where in (None, *self._zones)
            for label in (self.ALL, *self._labels)
        }

    def update(
        self, active: Iterable[TrackState], membership: ZoneMembership | None = None
    ) -> dict[CountKey, int]:
        """Counts of this frame that differ from the previous frame's (all, the first time)."""
        # Plain tuples inside (a NamedTuple is a tuple: they hash and compare the same);
        # only the changed keys become CountKeys.
        counts: dict[tuple[str | None, str], int] = dict(self._zero)
        for track in active:
            # A model label named "all" would add to the count of every label (one key,
            # one topic): it is counted there alone.
            label = track.label if track.label != self.ALL else None
            if label is not None:
                counts[(None, label)] = counts.get((None, label), 0) + 1
            counts[(None, self.ALL)] += 1
            if membership is not None:
                for zone in membership.zones_of(track.track_id):
                    if label is not None:
                        counts[(zone, label)] = counts.get((zone, label), 0) + 1
                    counts[(zone, self.ALL)] = counts.get((zone, self.ALL), 0) + 1
        # A label seen before and gone now reads 0 rather than staying at its last count.
        for key in self._last:
            if key not in counts:
                counts[key] = 0
        last = self._last
        changed = {CountKey(*k): v for k, v in counts.items() if last.get(k) != v}
        self._last = counts
        return changed
