"""Reading every frame of a recorded video, in order, for offline evaluation.

The daemon's file camera runs on its own thread and hands the pipeline the latest frame;
``edge-agent infer VIDEO`` instead wants each frame exactly once, with its index and its
position in the file, as fast as the model takes them. This module is that reader.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import NamedTuple

import cv2
import numpy as np

from edge_agent.errors import CaptureError
from edge_agent.inference.imagefile import opencv_name
from edge_agent.inference.runtime import capture_stderr

# Containers OpenCV's FFmpeg backend reads; anything else goes to the image reader.
VIDEO_SUFFIXES = frozenset(
    {".avi", ".mp4", ".m4v", ".mkv", ".mov", ".webm", ".mjpeg", ".mjpg", ".mpg", ".mpeg", ".ts"}
)


class VideoFrame(NamedTuple):
    """One decoded frame of a video file.

    Attributes:
        index: 0-based position of the frame in the file.
        timestamp_ms: its presentation time in the file (the container's, else index / fps,
            None when neither is known; see :func:`frame_time_ms`).
        image: BGR uint8.
    """

    index: int
    timestamp_ms: float | None
    image: np.ndarray


class VideoInfo(NamedTuple):
    """What the container says of a video (frame count and fps may be 0 when unknown)."""

    width: int
    height: int
    fps: float
    frames: int


def is_video_path(path: str) -> bool:
    """True when the file name says video (by suffix; images keep the image reader)."""
    return os.path.splitext(path)[1].lower() in VIDEO_SUFFIXES


def open_video(path: str) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video file with OpenCV.

    Raises:
        CaptureError: no such file, or OpenCV cannot open it.
    """
    if not os.path.isfile(path):
        raise CaptureError(f"{path}: no such video file")
    # FFmpeg and OpenCV write their complaints to fd 2; they become the error's reason.
    try:
        with opencv_name(path) as name, capture_stderr() as chatter:
            cap = cv2.VideoCapture(name, cv2.CAP_FFMPEG)  # FFmpeg holds a file of its own
            opened = cap.isOpened()
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read the video: {exc.strerror}") from exc
    if not opened:
        cap.release()
        said = [line.decode("utf-8", "replace").strip() for line in chatter]
        reason = next((line.split("] ", 1)[-1] for line in said if line.startswith("[")), "")
        raise CaptureError(
            f"{path}: OpenCV cannot open it as a video" + (f" ({reason})" if reason else "")
        )
    fps = cap.get(cv2.CAP_PROP_FPS)
    info = VideoInfo(
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        fps if math.isfinite(fps) and fps > 0 else 0.0,
        max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))),
    )
    return cap, info


def frame_time_ms(position_ms: float, index: int, fps: float) -> float | None:
    """A frame's time in the file, in ms (3 decimals).

    OpenCV's position is used when it is usable. Containers without timestamps (raw
    ``.mjpeg``, a JPEG named ``.mp4``) give a negative garbage position (-3.7e20: FFmpeg's
    "no timestamp" converted) or 0 for every frame; those frames get ``index / fps``
    (frame 0: 0). With no fps either, a later frame's time is unknown: None, not a guess.

    Args:
        position_ms: ``CAP_PROP_POS_MSEC`` after reading the frame.
        index: the frame's 0-based position in the file.
        fps: the container's frame rate (0: unknown).
    """
    usable = math.isfinite(position_ms) and (position_ms > 0 or (position_ms == 0 and not index))
    if usable:
        return round(float(position_ms), 3)
    if not index:
        return 0.0
    return round(index * 1000.0 / fps, 3) if fps > 0 else None


def read_frames(
    path: str, *, every: int = 1, max_frames: int = 0
) -> tuple[VideoInfo, Iterator[VideoFrame]]:
    """Every ``every``-th frame of a video, in file order, none dropped.

    Frames that are skipped by ``every`` are grabbed but not decoded (``grab()`` without
    ``retrieve()``), so a stride costs little more than the frames it returns.

    Args:
        path: the video file.
        every: keep one frame in ``every`` (1: all).
        max_frames: stop after this many returned frames (0: no limit).

    Returns:
        The container's info and an iterator of frames; the capture is released when the
        iterator is exhausted or closed.

    Raises:
        CaptureError: the file cannot be opened (at call time), or while iterating: it
            has not one frame, or a frame cannot be decoded.
        ValueError: ``every`` < 1 or ``max_frames`` < 0.
    """
    if every < 1 or max_frames < 0:
        raise ValueError(f"every must be >= 1 and max_frames >= 0, got {every}, {max_frames}")
    cap, info = open_video(path)

    def frames() -> Iterator[VideoFrame]:
        index, returned = -1, 0
        try:
            while not max_frames or returned < max_frames:
                with capture_stderr():  # a damaged packet's FFmpeg warning, not ours
                    if not cap.grab():
                        break  # the end of the file (or a frame FFmpeg cannot demux)
                    index += 1
                    if index % every:
                        continue
                    ok, image = cap.retrieve()
                if not ok or image is None:
                    raise CaptureError(f"{path}: frame {index} cannot be decoded")
                returned += 1
                msec = frame_time_ms(cap.get(cv2.CAP_PROP_POS_MSEC), index, info.fps)
                yield VideoFrame(index, msec, image)
            if index < 0:  # opened, but not one frame: a recording cut after its header
                raise CaptureError(f"{path}: no frame could be read")
        finally:
            cap.release()

    return info, frames()
