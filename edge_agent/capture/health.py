"""Camera health: the state names, the stats snapshot, and the reopen backoff."""

from __future__ import annotations

from typing import Callable, NamedTuple

FPS_WINDOW = 2.0  # seconds of recent frames behind stats().fps

StateCallback = Callable[[str, str, str], None]
"""``on_state(camera_name, state, detail)``."""


class CameraState:
    """Camera states, as plain strings (published as-is)."""

    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    STOPPED = "stopped"


class CameraStats(NamedTuple):
    """A snapshot of a camera's health.

    Attributes:
        name, source: the camera name and its source with credentials masked.
        state: a :class:`CameraState` value.
        frames: frames read from the source.
        dropped: frames replaced by a newer one before the consumer took them.
        reconnects: reopen attempts made after failures (successful or not).
        fps: capture rate over the last couple of seconds (0.0 when nothing arrives).
        last_error: the most recent failure (kept after recovery), None if none yet.
        backoff: the delay before the current/last reopen attempt; 0.0 while streaming.
        last_frame_age: seconds since the last frame, None before the first.
        frame_size: (width, height) of the last frame (a device's mode, a stream's
            resolution), None before the first.
    """

    name: str
    source: str
    state: str
    frames: int
    dropped: int
    reconnects: int
    fps: float
    last_error: str | None
    backoff: float
    last_frame_age: float | None
    frame_size: tuple[int, int] | None = None
