"""A live source's undecodable frames skipped, not taken for a lost stream.

OpenCV's read() fails on a frame its decoder cannot read (a JPEG cut short or garbled
on a Wi-Fi camera's stream) and reads the next one fine on the following call. The
camera thread takes a failed read of a live source for a lost stream and reopens it,
which loses seconds of frames for one bad one. A failed read that returned at once is
therefore tried again, up to :data:`MAX_BAD_FRAMES` in a row and while the failures
in a row took less than a second (half the read timeout if that is shorter): a read
that timed out (the stream went silent), more bad frames than that, or failures that
add up to that time still fail the read, so a lost stream is reopened about as soon as
it was, and a stop waits no longer.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.capture.wrapped import WrappedCapture

if TYPE_CHECKING:  # sources opens captures through this module
    from edge_agent.capture.sources import Capture

logger = logging.getLogger(__name__)

MAX_BAD_FRAMES = 8  # undecodable frames skipped in a row before a read fails
QUICK_S = 1.0  # failures in a row this long (or half the read timeout) are no bad frames


def skip_budget(read_timeout: float) -> float:
    """Seconds that undecodable frames in a row may take before a read gives up."""
    return min(QUICK_S, read_timeout / 2)


class SkipCorruptFrames(WrappedCapture):
    """A :class:`~edge_agent.capture.sources.Capture` over a live one, skipping up to
    :data:`MAX_BAD_FRAMES` undecodable frames in a row (counted in ``bad_frames``)."""

    def __init__(self, cap: Capture, name: str, read_timeout: float):
        super().__init__(cap)
        self._name = name
        self._quick = skip_budget(read_timeout)
        self.bad_frames = 0

    def read(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
        """The next frame that decodes, or (False, None) as the capture's read gives."""
        started = time.monotonic()
        for attempt in range(MAX_BAD_FRAMES):
            ok, frame = self._cap.read(image) if image is not None else self._cap.read()
            if ok and frame is not None:
                return ok, frame
            if attempt == MAX_BAD_FRAMES - 1 or time.monotonic() - started >= self._quick:
                break
            self.bad_frames += 1
            logger.debug("camera %s: a frame did not decode, skipped", self._name)
        return False, None
