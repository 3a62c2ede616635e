"""Tier 1: the motion gate (capture/motion.py) on synthetic frames."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edge_agent.capture.mjpeg import PREVIEW
from edge_agent.capture.motion import (
    MotionGate,
    MotionSettings,
    Verdict,
    changed_fraction,
    small_gray,
)

ON = MotionSettings(enabled=True, max_idle=10.0)


def scene(seed: int = 1, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A textured 640x480 BGR background (smooth blobs, like a real room)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 200, (size[0] // 40, size[1] // 40, 3), dtype=np.uint8)
    return cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def with_box(image: np.ndarray, x: int, y: int, w: int = 40, h: int = 80) -> np.ndarray:
    """The scene with a bright box (a person-sized object) at (x, y)."""
    out = image.copy()
    out[y : y + h, x : x + w] = (230, 230, 230)
    return out


def noisy(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Sensor noise of ``sigma`` grey levels."""
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def gate_seeing(first: np.ndarray, settings: MotionSettings = ON, forced: int = 0):
    """A gate whose camera ``cam`` has ``first`` as its reference, inferred at t=0."""
    gate = MotionGate({"cam": settings}, forced_frames=forced)
    check = gate.check("cam", first, 0.0)
    assert check.verdict is Verdict.NO_REFERENCE and check.infer
    gate.inferred("cam", check, 0.0)
    return gate


def test_small_gray_is_about_80_pixels_wide_whatever_the_frame_size():
    assert small_gray(scene()).shape == (60, 80)
    assert small_gray(scene(size=(1080, 1920))).shape == (45, 80)
    assert small_gray(scene(size=(120, 160))).shape == (60, 80)
    assert small_gray(np.zeros((480, 640), np.uint8)).shape == (60, 80)  # grey frames too


def test_the_same_frame_noise_and_codec_grain_are_still():
    base = scene()
    gate = gate_seeing(base)
    for i, frame in enumerate(
        [base, noisy(base, 4.0, 7), jpeg(base, 60), jpeg(noisy(base, 3, 8), 80)]
    ):
        check = gate.check("cam", frame, 0.1 * (i + 1))
        assert check.verdict is Verdict.STILL, (i, check.changed)
        assert not check.infer


def test_an_object_moving_20_pixels_is_motion():
    base = scene()
    gate = gate_seeing(with_box(base, 300, 200))
    check = gate.check("cam", with_box(base, 320, 200), 0.1)
    assert check.verdict is Verdict.MOTION and check.infer
    assert check.changed >= ON.threshold


def test_slow_motion_adds_up_against_the_last_inferred_frame():
    """1 px per frame never differs enough from the previous frame, yet is noticed."""
    settings = MotionSettings(enabled=True, threshold=0.01)
    base = scene()
    frames = [with_box(base, 300 + x, 200) for x in range(0, 40)]
    steps = [
        changed_fraction(small_gray(b), small_gray(a), settings.pixel_delta)
        for a, b in zip(frames, frames[1:])
    ]
    assert max(steps) < settings.threshold  # a gate against the previous frame never fires
    gate = gate_seeing(frames[0], settings)
    fired = [i for i, f in enumerate(frames[1:], 1) if gate.check("cam", f, i / 15).infer]
    assert fired and fired[0] <= 16, fired  # noticed within 16 px


def test_slow_motion_adds_up_on_the_previews_of_jpeg_frames_too():
    """A gated camera decoding reduced hands the gate each JPEG's 1/8 luma (8x8 block
    means): as sensitive to a box moving 1 px per frame as the green-channel sample."""
    settings = MotionSettings(enabled=True, threshold=0.01)
    base = scene()
    quality = [cv2.IMWRITE_JPEG_QUALITY, 90]
    previews = [
        cv2.imdecode(cv2.imencode(".jpg", with_box(base, 300 + x, 200), quality)[1], PREVIEW)
        for x in range(0, 40)
    ]
    gate = MotionGate({"cam": settings})
    first = gate.check("cam", previews[0], 0.0, preview=True)
    gate.inferred("cam", first, 0.0)
    fired = [
        i for i, p in enumerate(previews[1:], 1) if gate.check("cam", p, i / 15, preview=True).infer
    ]
    assert fired and fired[0] <= 16, fired


def test_a_new_reference_after_each_inferred_frame():
    base = scene()
    gate = gate_seeing(with_box(base, 100, 100))
    moved = gate.check("cam", with_box(base, 200, 100), 0.1)
    assert moved.verdict is Verdict.MOTION
    gate.inferred("cam", moved, 0.1)
    assert gate.check("cam", with_box(base, 200, 100), 0.2).verdict is Verdict.STILL


def test_max_idle_sends_a_still_frame_to_the_model():
    base = scene()
    gate = gate_seeing(base, MotionSettings(enabled=True, max_idle=2.0))
    assert gate.check("cam", base, 1.9).verdict is Verdict.STILL
    idle = gate.check("cam", base, 2.0)
    assert idle.verdict is Verdict.IDLE and idle.infer
    gate.inferred("cam", idle, 2.0)
    assert gate.check("cam", base, 3.9).verdict is Verdict.STILL


def test_after_reset_the_next_frames_go_to_the_model():
    base = scene()
    gate = gate_seeing(base, forced=3)
    gate.reset()
    verdicts = []
    for i in range(6):
        check = gate.check("cam", base, 0.1 * i)
        verdicts.append(check.verdict)
        if check.infer:
            gate.inferred("cam", check, 0.1 * i)
    assert verdicts == [Verdict.NO_REFERENCE] + [Verdict.FORCED] * 3 + [Verdict.STILL] * 2


def test_a_new_frame_size_is_motion():
    gate = gate_seeing(scene())
    check = gate.check("cam", scene(size=(720, 1280)), 0.1)
    assert check.verdict is Verdict.MOTION and check.changed == 1.0


def test_from_config_gates_only_the_cameras_that_ask():
    config = SimpleNamespace(
        camera=[
            SimpleNamespace(
                name="porch",
                motion_gate=True,
                motion_threshold=0.01,
                motion_pixel_delta=30,
                motion_max_idle=5.0,
            ),
            SimpleNamespace(
                name="lab",
                motion_gate=False,
                motion_threshold=0.002,
                motion_pixel_delta=25,
                motion_max_idle=10.0,
            ),
        ],
        updates=SimpleNamespace(health_frames=20),
    )
    gate = MotionGate.from_config(config)
    assert gate.gated("porch") and not gate.gated("lab")


@pytest.mark.parametrize(
    "key, value",
    [("motion_threshold", 0), ("motion_threshold", 1.5), ("motion_pixel_delta", 0)],
)
def test_bad_motion_settings_name_the_file_and_key(tmp_path, key, value):
    from edge_agent.config import load_config
    from edge_agent.errors import ConfigError

    path = tmp_path / "agent.toml"
    path.write_text(
        f'[model]\npath = "m.tflite"\n[[camera]]\nsource = "synthetic"\n{key} = {value}\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and f"camera[0].{key}" in str(err.value)
