"""Motion gating: skip inference while a camera's scene does not change.

A frame is compared with the last frame the model saw (its *reference*), on a small
grayscale copy: a strided sample of the green channel (about 160 pixels wide),
averaged 2x2, so sensor noise and JPEG grain mostly cancel. A gated MJPG camera decoding
at reduced scale brings its own: each frame's 1/8-scale luma, decoded from the JPEG (each
pixel the mean of an 8x8 block), so a frame that skips the model need not be decoded (see
:mod:`.mjpeg`). Pixels that moved by more than ``pixel_delta`` grey levels are counted;
when fewer than ``threshold`` of them changed, nothing moved and the model's last
results still describe the scene.

Comparing with the last *inferred* frame, not the previous one, means slow change
adds up (a person walking slowly, dusk falling) until it crosses the threshold, and
``max_idle`` still sends a frame to the model now and then, whatever the scene does.

The functions are pure; :class:`MotionGate` keeps one reference per camera and is used
from one thread (the pipeline's).
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import cv2
import numpy as np

SAMPLE_WIDTH = 160  # pixels across the strided sample (before the 2x2 average)


class MotionSettings(NamedTuple):
    """One camera's gate (``camera.motion_*`` in the config)."""

    enabled: bool = False
    threshold: float = 0.002  # fraction of the small image that must change
    pixel_delta: int = 25  # grey levels a pixel must move by to count as changed
    max_idle: float = 10.0  # seconds: a frame goes to the model at least this often

    @classmethod
    def of(cls, camera: Any) -> MotionSettings:
        """A camera config's ``motion_*`` keys (the defaults for keys it lacks)."""
        fields = zip(cls._fields, ("gate", "threshold", "pixel_delta", "max_idle"))
        return cls(
            **{f: getattr(camera, f"motion_{key}", cls._field_defaults[f]) for f, key in fields}
        )


class Verdict(enum.Enum):
    """Why a frame goes to the model, or why it does not."""

    MOTION = "motion"  # the scene changed since the reference
    STILL = "still"  # nothing moved: the last results stand
    NO_REFERENCE = "no_reference"  # the model has not seen this camera yet
    IDLE = "idle"  # max_idle passed since the model last saw this camera
    FORCED = "forced"  # after a model switch: the new model sees the next frames


class Check(NamedTuple):
    """The gate's answer for one frame."""

    verdict: Verdict
    changed: float  # fraction of the small image that changed (0 without a reference)
    small: np.ndarray  # this frame's small copy, the reference once it is inferred

    @property
    def infer(self) -> bool:
        """Whether the frame goes to the model."""
        return self.verdict is not Verdict.STILL


def small_gray(image: np.ndarray) -> np.ndarray:
    """A small grayscale copy of a BGR (or grey) frame for motion tests.

    The stride keeps the cost independent of the frame size (about 0.04 ms for
    640x480); the 2x2 area average halves the noise of single samples.
    """
    height, width = image.shape[:2]
    step = max(1, width // SAMPLE_WIDTH)
    plane = image[::step, ::step, 1] if image.ndim == 3 else image[::step, ::step]
    plane = np.ascontiguousarray(plane)
    h, w = plane.shape
    if h < 2 or w < 2:
        return plane
    return cv2.resize(plane, (w // 2, h // 2), interpolation=cv2.INTER_AREA)


def changed_fraction(small: np.ndarray, reference: np.ndarray, pixel_delta: int) -> float:
    """Fraction of pixels that moved by more than ``pixel_delta``; 1.0 when the shapes
    differ (the camera changed mode: everything is new)."""
    if small.shape != reference.shape:
        return 1.0
    moved = np.count_nonzero(cv2.absdiff(small, reference) > pixel_delta)
    return moved / small.size if small.size else 0.0


class _Reference(NamedTuple):
    small: np.ndarray
    at: float  # monotonic time of the inferred frame
    frame_id: int  # the inferred frame's id (-1 when not given)


class MotionGate:
    """Decides, per camera, whether a frame must go to the model.

    Args:
        settings: camera name -> its settings; cameras not named are never gated.
        forced_frames: frames sent to the model after :meth:`reset` whatever the scene
            (a new model's health check counts inferred frames).
    """

    def __init__(self, settings: dict[str, MotionSettings], forced_frames: int = 0):
        self._settings = {name: s for name, s in settings.items() if s.enabled}
        self._forced_frames = forced_frames
        self._forced = 0
        self._references: dict[str, _Reference] = {}

    @classmethod
    def from_config(cls, config: Any) -> MotionGate:
        """The gate of a loaded Config: its cameras' ``motion_*`` keys; after a model
        switch, ``updates.health_frames`` frames go to the model whatever moves."""
        settings = {camera.name: MotionSettings.of(camera) for camera in config.camera}
        return cls(settings, forced_frames=config.updates.health_frames)

    def gated(self, camera: str) -> bool:
        """Whether the camera's frames are tested at all."""
        return camera in self._settings

    def check(self, camera: str, image: np.ndarray, now: float, *, preview: bool = False) -> Check:
        """Test one frame of a gated camera (``camera`` must be :meth:`gated`; ``now``
        is the frame's monotonic time). With ``preview``, ``image`` is a deferred frame's
        preview, used as the small copy as it is (see :mod:`.mjpeg`)."""
        small = image if preview else small_gray(image)
        settings = self._settings[camera]
        ref = self._references.get(camera)
        if ref is None:
            return Check(Verdict.NO_REFERENCE, 0.0, small)
        changed = changed_fraction(small, ref.small, settings.pixel_delta)
        if changed >= settings.threshold:
            verdict = Verdict.MOTION
        elif self._forced > 0:
            verdict = Verdict.FORCED
        elif now - ref.at >= settings.max_idle:
            verdict = Verdict.IDLE
        else:
            verdict = Verdict.STILL
        return Check(verdict, changed, small)

    def inferred(self, camera: str, check: Check, now: float, frame_id: int = -1) -> None:
        """The checked frame (``frame_id``) went to the model: it is the camera's new
        reference."""
        self._references[camera] = _Reference(check.small, now, frame_id)
        if check.verdict is Verdict.FORCED:
            self._forced -= 1

    def reference(self, camera: str) -> int | None:
        """The id of the frame the camera's next frames are compared with, if any."""
        ref = self._references.get(camera)
        return ref.frame_id if ref is not None else None

    def forget(self) -> None:
        """Forget the references: the next frame of every camera goes to the model."""
        self._references.clear()

    def reset(self) -> None:
        """A new model: forget the references and infer the next frames."""
        self._references.clear()
        self._forced = self._forced_frames
