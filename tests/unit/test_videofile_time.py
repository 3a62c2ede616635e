"""A video frame's time in the file when the container has no usable timestamps."""

import pytest

from edge_agent.capture.videofile import frame_time_ms

NO_TIMESTAMP = -3.68934881474191e20  # what OpenCV reports for a raw .mjpeg's frame 0


@pytest.mark.parametrize(
    "position, index, fps, expected",
    [
        (0.0, 0, 25.0, 0.0),  # a container with timestamps: as it says
        (40.0, 1, 25.0, 40.0),
        (1234.5678, 30, 25.0, 1234.568),
        (NO_TIMESTAMP, 0, 25.0, 0.0),  # raw .mjpeg, a JPEG named .mp4: frame 0 is 0
        (NO_TIMESTAMP, 3, 25.0, 120.0),  # later frames: index / fps
        (float("nan"), 2, 10.0, 200.0),
        (0.0, 5, 10.0, 500.0),  # every frame at 0: no timestamps either
        (NO_TIMESTAMP, 0, 0.0, 0.0),
        (NO_TIMESTAMP, 3, 0.0, None),  # no fps either: unknown, not a guess
    ],
)
def test_frame_time(position, index, fps, expected):
    assert frame_time_ms(position, index, fps) == expected
