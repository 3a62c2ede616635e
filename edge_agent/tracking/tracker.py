"""A small SORT/ByteTrack-style multi-object tracker.

Each frame's detections are associated with the live tracks of the same label by IoU,
greedily from the best pair down (as SORT and ByteTrack do in their greedy variants),
in two stages: confident detections first, then the low-score ones against the tracks
still unmatched, so an object whose score dips for a frame keeps its id. A track's box
can be predicted forward with a constant velocity before matching, so a fast object
still overlaps its own track.

A track is *confirmed* after ``min_hits`` matched frames and *ends* ``max_age`` seconds
after it was last seen; both can be set per label. Tentative tracks that never confirm
vanish silently: a one-frame false positive makes no event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels


# The shortest gap a velocity is measured over: one frame at 30 fps.
MIN_VELOCITY_DT = 1.0 / 30.0


class Detection(NamedTuple):
    """One detection of one frame."""

    label: str
    score: float
    box: Box


class TrackRule(NamedTuple):
    """When a track of a label starts and ends."""

    min_hits: int = 2  # matched frames before the track is confirmed
    max_age: float = 1.0  # seconds unseen before the track ends


class TrackerSettings(NamedTuple):
    """How detections are associated.

    Attributes:
        match_iou: minimum IoU of a detection with a track's (predicted) box.
        high_score: detections at or above it are matched first and may start tracks.
        low_score: detections in ``[low_score, high_score)`` only keep existing tracks.
        predict: move boxes forward with each track's velocity before matching.
        rule: the default start/end rule; ``rules`` overrides it per label.
    """

    match_iou: float = 0.3
    high_score: float = 0.5
    low_score: float = 0.1
    predict: bool = True
    rule: TrackRule = TrackRule()
    rules: Mapping[str, TrackRule] = MappingProxyType({})


class TrackState(NamedTuple):
    """A snapshot of a track, as events and counts see it."""

    track_id: int
    label: str
    score: float  # of the latest matched detection
    box: Box  # of the latest matched detection
    top_score: float
    top_box: Box
    first_seen: float
    last_seen: float
    hits: int


class TrackerStep(NamedTuple):
    """What one frame changed: tracks confirmed now, every live confirmed track, and
    tracks that ended (unseen for longer than their ``max_age``)."""

    started: list[TrackState]
    active: list[TrackState]
    ended: list[TrackState]
    matched: frozenset[int]  # ids of the active tracks seen in this frame


class _Track:
    """A live track (mutable; owned by the Tracker). Boxes are plain tuples: numpy on
    four numbers costs more than the arithmetic itself."""

    __slots__ = (
        "track_id",
        "label",
        "score",
        "box",
        "top_score",
        "top_box",
        "first_seen",
        "last_seen",
        "hits",
        "velocity",
        "confirmed",
    )

    def __init__(self, track_id: int, det: Detection, t: float):
        self.track_id = track_id
        self.label = det.label
        self.score = det.score
        self.box: Box = tuple(map(float, det.box))  # type: ignore[assignment]
        self.top_score = det.score
        self.top_box = self.box
        self.first_seen = t
        self.last_seen = t
        self.hits = 1
        self.velocity: Box = (0.0, 0.0, 0.0, 0.0)  # box edges per second
        self.confirmed = False

    def update(self, det: Detection, t: float) -> None:
        """Take a matched detection; smooth the velocity over the gap since last seen."""
        box: Box = tuple(map(float, det.box))  # type: ignore[assignment]
        dt = t - self.last_seen
        if dt > 0:
            # Exponential smoothing: one noisy box does not throw the prediction off. Frames
            # that arrive in a burst (a network camera catching up, a file read ahead) are
            # milliseconds apart: dividing by that would make a 20 px step 20000 px/s, so
            # the gap counts as at least one frame period.
            k = 0.5 / max(dt, MIN_VELOCITY_DT)
            v, o = self.velocity, self.box  # spelt out: this runs for every object, every frame
            self.velocity = (
                0.5 * v[0] + k * (box[0] - o[0]),
                0.5 * v[1] + k * (box[1] - o[1]),
                0.5 * v[2] + k * (box[2] - o[2]),
                0.5 * v[3] + k * (box[3] - o[3]),
            )
        self.box = box
        self.score = det.score
        if det.score > self.top_score:
            self.top_score, self.top_box = det.score, box
        self.last_seen = t
        self.hits += 1

    def state(self) -> TrackState:
        """An immutable snapshot."""
        return TrackState(
            self.track_id,
            self.label,
            self.score,
            self.box,
            self.top_score,
            self.top_box,
            self.first_seen,
            self.last_seen,
            self.hits,
        )


def _scaled(box: Box, sx: float, sy: float) -> Box:
    """A box (or its edge velocities) with x scaled by ``sx`` and y by ``sy``."""
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def predict_boxes(boxes: np.ndarray, velocity: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Boxes ``(n, 4)`` moved by their edge velocities ``(n, 4)`` (px/s) for ``dt`` ``(n,)`` s.

    Never further than each box's own size: a bad velocity must not carry a prediction
    off its object (the track would end and another start).
    """
    size = np.maximum(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 1.0)
    limit = size[:, None]
    return boxes + np.clip(velocity * dt[:, None], -limit, limit)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4): an (N, M) array."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    # In place where it can be: at 20 x 20 each numpy call costs more than its arithmetic.
    at, bt = a.T[:, :, None], b.T[:, None, :]
    w = np.minimum(at[2], bt[2])
    w -= np.maximum(at[0], bt[0])
    np.maximum(w, 0.0, out=w)
    h = np.minimum(at[3], bt[3])
    h -= np.maximum(at[1], bt[1])
    np.maximum(h, 0.0, out=h)
    inter = w * h
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    np.maximum(union, 1e-12, out=union)  # empty boxes: 0 / tiny = 0
    return inter / union


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs ``(row, col)`` taken best IoU first, each row and column at most once."""
    if iou.size == 0:
        return []
    rows, cols = np.nonzero(iou >= threshold)
    if rows.size == 0:
        return []
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


class Tracker:
    """Tracks the objects of one camera across frames.

    Args:
        settings: association and start/end rules.
        first_id: the first track id handed out (ids only grow).
    """

    def __init__(self, settings: TrackerSettings | None = None, first_id: int = 1):
        self.settings = settings or TrackerSettings()
        self._tracks: list[_Track] = []
        self._next_id = first_id

    def _rule(self, label: str) -> TrackRule:
        return self.settings.rules.get(label, self.settings.rule)

    def update(self, detections: Sequence[Detection], t: float) -> TrackerStep:
        """Associate one frame's detections (captured at time ``t``, seconds).

        Returns:
            The tracks confirmed by this frame, all live confirmed tracks, and the
            confirmed tracks that ended.
        """
        s = self.settings
        matched: set[int] = set()
        pending = [d for d in detections if d.score >= s.low_score]
        for stage_high in (True, False):
            stage = [d for d in pending if (d.score >= s.high_score) == stage_high]
            if not stage:
                continue
            free = [tr for tr in self._tracks if tr.track_id not in matched]
            if not stage_high:
                free = [tr for tr in free if tr.confirmed]  # low scores only keep tracks
            taken = self._associate(stage, free, t, matched)
            pending = [d for d in pending if id(d) not in taken]
        started: list[TrackState] = []
        for det in pending:
            if det.score < s.high_score:
                continue  # a low-score detection never starts a track
            track = _Track(self._next_id, det, t)
            self._next_id += 1
            self._tracks.append(track)
            matched.add(track.track_id)
        ended: list[TrackState] = []
        alive: list[_Track] = []
        for track in self._tracks:
            rule = self._rule(track.label)
            if track.track_id not in matched and t - track.last_seen > rule.max_age:
                if track.confirmed:
                    ended.append(track.state())
                continue
            if not track.confirmed and track.hits >= rule.min_hits:
                track.confirmed = True
                started.append(track.state())
            alive.append(track)
        self._tracks = alive
        active = [tr.state() for tr in alive if tr.confirmed]
        seen = frozenset(tr.track_id for tr in alive if tr.confirmed and tr.track_id in matched)
        return TrackerStep(started, active, ended, seen)

    def _associate(
        self, dets: list[Detection], tracks: list[_Track], t: float, matched: set[int]
    ) -> set[int]:
        """Match ``dets`` to ``tracks`` of the same label; returns ``id()`` of the used dets.

        One IoU matrix for all labels, with pairs of different labels zeroed.
        """
        if not tracks:
            return set()
        if self.settings.predict:  # one array for box, velocity and age: fewer numpy calls
            rows = np.array([(*tr.box, *tr.velocity, t - tr.last_seen) for tr in tracks])
            predicted = predict_boxes(rows[:, :4], rows[:, 4:8], rows[:, 8])
        else:
            predicted = np.array([tr.box for tr in tracks], dtype=np.float64)
        boxes = np.array([d.box for d in dets], dtype=np.float64)
        iou = iou_matrix(predicted, boxes)
        if len({tr.label for tr in tracks} | {d.label for d in dets}) > 1:
            codes: dict[str, int] = {}
            track_labels = np.array([codes.setdefault(tr.label, len(codes)) for tr in tracks])
            det_labels = np.array([codes.setdefault(d.label, len(codes)) for d in dets])
            iou[track_labels[:, None] != det_labels[None, :]] = 0.0
        used: set[int] = set()
        for r, c in greedy_match(iou, self.settings.match_iou):
            tracks[r].update(dets[c], t)
            matched.add(tracks[r].track_id)
            used.add(id(dets[c]))
        return used

    def rescale(self, sx: float, sy: float) -> None:
        """Carry every track over to a frame scaled by ``(sx, sy)`` (the camera's mode
        changed): same objects, boxes and velocities in the new frame's pixels."""
        for track in self._tracks:
            track.box = _scaled(track.box, sx, sy)
            track.top_box = _scaled(track.top_box, sx, sy)
            track.velocity = _scaled(track.velocity, sx, sy)

    def shift(self, dt: float) -> None:
        """Move every track's times by ``dt`` seconds (the wall clock was set): ages and
        durations stay what they were."""
        for track in self._tracks:
            track.first_seen += dt
            track.last_seen += dt

    def end_all(self) -> list[TrackState]:
        """End every confirmed track now (detection switched off, shutdown)."""
        ended = [tr.state() for tr in self._tracks if tr.confirmed]
        self._tracks = []
        return ended
