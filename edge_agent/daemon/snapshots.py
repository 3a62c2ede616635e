"""Snapshots: the frame of an object's best score, as a JPEG retained on
``{prefix}/{device_id}/{camera}/{label}/snapshot``.

The pipeline thread copies a frame only when a track's best score improves (downscaled
to ``snapshot_width`` at that moment, so memory stays bounded by the number of tracks
kept); the JPEG is drawn and encoded by this module's own thread, off the frame path.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable, NamedTuple

import cv2
import numpy as np

from edge_agent.daemon.snapshot_store import SnapshotStore
from edge_agent.publishing.topics import Topics

logger = logging.getLogger(__name__)

_BOX_COLOUR = (0, 255, 0)  # BGR


class Snapshot(NamedTuple):
    """A kept frame: an owned copy, the box in its pixels, what it shows."""

    camera: str
    label: str
    track_id: int
    score: float
    box: tuple[float, float, float, float]
    image: np.ndarray
    event_id: str = ""  # set when it is sent with its event (names the file on disk)


def keep(
    camera: str,
    label: str,
    track_id: int,
    score: float,
    box: tuple[float, float, float, float],
    frame: np.ndarray,
    width: int,
) -> Snapshot:
    """Copy a frame (shrunk to at most ``width`` pixels wide) for a snapshot."""
    h, w = frame.shape[:2]
    if w > width:
        scale = width / w
        image = cv2.resize(frame, (width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        box = (box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale)
    else:
        image = frame.copy()
    return Snapshot(camera, label, track_id, score, box, image)


def encode(snapshot: Snapshot, *, crop: bool, quality: int) -> bytes:
    """The JPEG of a snapshot: the box and its score drawn, or the box's surroundings only.

    Raises:
        ValueError: OpenCV could not encode the image.
    """
    image = snapshot.image.copy()
    x0, y0, x1, y1 = (int(round(v)) for v in snapshot.box)
    h, w = image.shape[:2]
    thickness = max(1, w // 320)
    cv2.rectangle(image, (x0, y0), (x1, y1), _BOX_COLOUR, thickness)
    text = f"{snapshot.label} {snapshot.score:.2f}"
    cv2.putText(
        image,
        text,
        (max(0, x0), max(12, y0 - 4)),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4 * thickness,
        _BOX_COLOUR,
        thickness,
    )
    if crop:
        # A margin of context around the box, 8 px at least: a box on the frame's edge or
        # under a pixel wide (a small object in a shrunk frame) still gives a picture.
        x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        mx, my = max(8, (x1 - x0) // 4), max(8, (y1 - y0) // 4)
        image = image[max(0, y0 - my) : min(h, y1 + my), max(0, x0 - mx) : min(w, x1 + mx)]
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


class SnapshotWriter:
    """Encodes and publishes snapshots in its own thread (owned here: start/stop).

    Args:
        topics: the device's topics.
        publish: ``publish(topic, jpeg)``, retained.
        crop: publish the box's surroundings instead of the whole frame.
        quality: JPEG quality, 1..100.
        depth: objects whose snapshot may wait at most. A newer snapshot of an object
            replaces its waiting one; another object's never does (its event says it has
            one, and its retained topic must get it), unless ``depth`` objects already
            wait: then the oldest waiting one is dropped (counted in :attr:`dropped`).
        store: also keep each published JPEG on disk (opened by this thread).
    """

    def __init__(
        self,
        topics: Topics,
        publish: Callable[[str, bytes], None],
        *,
        crop: bool = False,
        quality: int = 80,
        depth: int = 16,
        store: SnapshotStore | None = None,
    ):
        self.store = store
        self._topics = topics
        self._publish = publish
        self._crop = crop
        self._quality = quality
        self._depth = depth
        # (camera, label, track id) -> its latest snapshot, oldest object first
        self._waiting: OrderedDict[tuple[str, str, int], Snapshot] = OrderedDict()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0
        self.dropped = 0

    def start(self) -> None:
        """Start the encoding thread."""
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()

    def submit(self, snapshot: Snapshot) -> None:
        """Queue a snapshot (replacing that object's waiting one); never blocks (the
        frame path calls this)."""
        key = (snapshot.camera, snapshot.label, snapshot.track_id)
        with self._cond:
            if self._waiting.pop(key, None) is None and len(self._waiting) >= self._depth:
                self._waiting.popitem(last=False)
                self.dropped += 1
            self._waiting[key] = snapshot  # the same object's better one supersedes it
            self._cond.notify()

    def _next(self, timeout: float) -> Snapshot | None:
        """The oldest waiting snapshot, waiting up to ``timeout`` s for one."""
        with self._cond:
            if not self._waiting:
                self._cond.wait(timeout)
            if not self._waiting:
                return None
            return self._waiting.popitem(last=False)[1]

    def _run(self) -> None:
        if self.store is not None:
            self.store.open()  # a directory scan: here, not on the daemon's start path
        while not self._stop.is_set() or self._waiting:
            snap = self._next(0.2)
            if snap is None:
                continue
            try:
                jpeg = encode(snap, crop=self._crop, quality=self._quality)
                self._publish(self._topics.snapshot(snap.camera, snap.label), jpeg)
                self.published += 1
                if self.store is not None and snap.event_id:
                    self.store.save(snap.camera, snap.label, snap.event_id, jpeg)
            except Exception:  # a snapshot must never take the thread down
                logger.exception("camera %s: snapshot of %s failed", snap.camera, snap.label)

    def stop(self, timeout: float = 2.0) -> None:
        """Encode what is queued, then stop (bounded by ``timeout``)."""
        self._stop.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("snapshot thread did not stop within %.1fs", timeout)
            self._thread = None
