"""Zones: polygons of a camera's view, and which tracked objects are inside them.

An object is in a zone when an *anchor* point of its box lies inside the polygon: the
bottom centre by default (where a person's feet or a car's wheels touch the ground, as
Frigate does), or the centre. A zone may accept only some labels, and an object enters
it only after ``min_frames`` consecutive frames inside (a box flickering on the edge
does not enter and leave every frame).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from edge_agent.tracking.tracker import Box, TrackState

Point = tuple[float, float]


class Anchor(enum.Enum):
    """The point of a box tested against the zone's polygon."""

    BOTTOM_CENTER = "bottom_center"
    CENTER = "center"
    TOP_CENTER = "top_center"


class Zone(NamedTuple):
    """A named polygon in frame pixels (see :func:`scaled` for 0..1 coordinates)."""

    name: str
    polygon: tuple[Point, ...]
    labels: frozenset[str] = frozenset()  # empty: every label
    min_frames: int = 1
    anchor: Anchor = Anchor.BOTTOM_CENTER


def scaled(zone: Zone, width: int, height: int) -> Zone:
    """The zone with 0..1 coordinates turned into pixels of a ``width`` x ``height`` frame."""
    return zone._replace(polygon=tuple((x * width, y * height) for x, y in zone.polygon))


def anchor_point(box: Box, anchor: Anchor) -> Point:
    """The anchor point of a box."""
    x0, y0, x1, y1 = box
    cx = (x0 + x1) / 2.0
    if anchor is Anchor.BOTTOM_CENTER:
        return cx, y1
    if anchor is Anchor.TOP_CENTER:
        return cx, y0
    return cx, (y0 + y1) / 2.0


def inside(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd rule point-in-polygon test (points on an edge may go either way)."""
    x, y = point
    result = False
    n = len(polygon)
    for i in range(n):
        xi, yi = polygon[i]
        xj, yj = polygon[i - 1]
        if (yi > y) != (yj > y):
            x_cross = xi + (y - yi) * (xj - xi) / (yj - yi)
            if x < x_cross:
                result = not result
    return result


class ZoneMembership:
    """Which confirmed tracks are in which zones, with ``min_frames`` hysteresis to enter.

    Args:
        zones: the camera's zones, in frame pixels.
    """

    def __init__(self, zones: Iterable[Zone]):
        self.rezone(zones)
        self._streak: dict[tuple[int, str], int] = {}  # consecutive frames inside
        self._inside: dict[int, set[str]] = {}

    def rezone(self, zones: Iterable[Zone]) -> None:
        """Take the same zones in another frame size's pixels; who is inside is kept."""
        self.zones = tuple(zones)
        # Bounding boxes: most anchors are outside most zones, and this test is cheap.
        self._bounds = [
            (
                min(x for x, _ in z.polygon),
                min(y for _, y in z.polygon),
                max(x for x, _ in z.polygon),
                max(y for _, y in z.polygon),
            )
            for z in self.zones
        ]

    def update(self, tracks: Iterable[TrackState], ended: Iterable[TrackState] = ()) -> None:
        """Take the tracks seen in a frame; forget the ended ones."""
        for track in ended:
            self.forget(track.track_id)
        if not self.zones:
            return
        zones = list(zip(self.zones, self._bounds))
        streaks, inside_now = self._streak, self._inside
        for track in tracks:  # runs for every object in every frame: kept lean
            track_id, label = track.track_id, track.label
            now_in = inside_now.get(track_id)
            if now_in is None:
                now_in = inside_now[track_id] = set()
            bx0, by0, bx1, by1 = track.box
            cx = (bx0 + bx1) * 0.5
            for zone, (x0, y0, x1, y1) in zones:
                if zone.labels and label not in zone.labels:
                    continue
                anchor = zone.anchor
                y = (
                    by1
                    if anchor is Anchor.BOTTOM_CENTER
                    else by0
                    if anchor is Anchor.TOP_CENTER
                    else (by0 + by1) * 0.5
                )
                key = (track_id, zone.name)
                if x0 <= cx <= x1 and y0 <= y <= y1 and inside((cx, y), zone.polygon):
                    streak = streaks[key] = streaks.get(key, 0) + 1
                    if streak >= zone.min_frames:
                        now_in.add(zone.name)
                elif key in streaks:
                    del streaks[key]
                    now_in.discard(zone.name)

    def zones_of(self, track_id: int) -> frozenset[str]:
        """The zones the track is in now."""
        return frozenset(self._inside.get(track_id, ()))

    def forget(self, track_id: int) -> None:
        """Drop an ended track's state."""
        self._inside.pop(track_id, None)
        for key in [k for k in self._streak if k[0] == track_id]:
            del self._streak[key]
