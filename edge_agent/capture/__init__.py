"""Camera capture with OpenCV: sources, latest-frame slots, reopen with backoff."""

from edge_agent.capture.camera import Camera
from edge_agent.capture.frames import Frame
from edge_agent.capture.health import CameraState, CameraStats
from edge_agent.capture.sources import SourceSpec, parse_source

__all__ = [
    "Camera",
    "CameraState",
    "CameraStats",
    "Frame",
    "SourceSpec",
    "parse_source",
]
