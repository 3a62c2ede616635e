"""Source parsing, credential masking, open parameters and the synthetic pattern."""

from __future__ import annotations

import math
import os
import sys

import cv2
import numpy as np
import pytest

from edge_agent.capture.camera import Camera
from edge_agent.capture.sources import (
    SourceKind,
    SourceSpec,
    capture_api,
    open_capture,
    open_params,
    parse_source,
    source_fps,
)
from edge_agent.capture.synthetic import (
    PatternRenderer,
    SyntheticCapture,
    decode_index,
    encode_index,
    render_pattern,
)
from edge_agent.errors import ConfigError

D, S, F, Y = SourceKind.DEVICE, SourceKind.STREAM, SourceKind.FILE, SourceKind.SYNTHETIC


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (0, SourceSpec(D, 0, "/dev/video0")),
        (3, SourceSpec(D, 3, "/dev/video3")),
        ("0", SourceSpec(D, 0, "/dev/video0")),
        (" 2 ", SourceSpec(D, 2, "/dev/video2")),
        ("/dev/video0", SourceSpec(D, "/dev/video0", "/dev/video0")),
        ("/dev/v4l/by-id/usb-cam-index0", SourceSpec(D, "/dev/v4l/by-id/usb-cam-index0",
                                                     "/dev/v4l/by-id/usb-cam-index0")),
        ("rtsp://admin:pw@10.0.0.5:554/stream1",
         SourceSpec(S, "rtsp://admin:pw@10.0.0.5:554/stream1", "rtsp://admin:***@10.0.0.5:554/stream1")),
        ("RTSP://cam/live", SourceSpec(S, "RTSP://cam/live", "RTSP://cam/live")),
        ("rtsps://cam:322/x", SourceSpec(S, "rtsps://cam:322/x", "rtsps://cam:322/x")),
        ("http://cam.local/mjpg/video.mjpg",
         SourceSpec(S, "http://cam.local/mjpg/video.mjpg", "http://cam.local/mjpg/video.mjpg")),
        ("https://u:p@cam/v.mjpg?token=abc",
         SourceSpec(S, "https://u:p@cam/v.mjpg?token=abc", "https://u:***@cam/v.mjpg?token=***")),
        ("clip.avi", SourceSpec(F, "clip.avi", "clip.avi")),
        ("/data/clips/door.mp4", SourceSpec(F, "/data/clips/door.mp4", "/data/clips/door.mp4")),
        ("file:///data/clip%20a.avi", SourceSpec(F, "/data/clip a.avi", "/data/clip a.avi")),
        ("synthetic_clip.avi", SourceSpec(F, "synthetic_clip.avi", "synthetic_clip.avi")),
        ("synthetic", SourceSpec(Y, "", "synthetic")),
        ("synthetic:320x240", SourceSpec(Y, "", "synthetic:320x240", 320, 240, None)),
        ("synthetic:320x240@15", SourceSpec(Y, "", "synthetic:320x240@15", 320, 240, 15.0)),
        ("Synthetic:64x48@2.5", SourceSpec(Y, "", "synthetic:64x48@2.5", 64, 48, 2.5)),
        ("synthetic@5", SourceSpec(Y, "", "synthetic@5", None, None, 5.0)),
    ],
)  # fmt: skip
def test_parse_source_table(source, expected):
    assert parse_source(source) == expected


def test_parse_source_expands_home():
    spec = parse_source("~/clips/a.avi")
    assert spec == SourceSpec(F, os.path.expanduser("~/clips/a.avi"), spec.target)
    assert not spec.target.startswith("~")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (-1, ">= 0"),
        ("-1", ">= 0"),
        (True, "string or device index"),
        (None, "string or device index"),
        (1.5, "string or device index"),
        ("ftp://cam/x", "unsupported camera URL scheme 'ftp'"),
        ("rtsp:///nohost", "without a host"),
        ("http://u:secret@/x", "without a host"),
        ("synthetic:10x10", "32..8192"),
        ("synthetic:640x480@0", "fps"),
        ("synthetic:640", "synthetic:640x480@30"),
        ("synthetic:axb", "synthetic:640x480@30"),
    ],
)
def test_parse_source_rejects(source, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")) as info:
        parse_source(source)
    assert "secret" not in str(info.value)


def test_capture_api_per_kind():
    device = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    assert capture_api(parse_source("/dev/video0")) == device
    assert capture_api(parse_source(1)) == device
    assert capture_api(parse_source("rtsp://cam/x")) == cv2.CAP_FFMPEG
    assert capture_api(parse_source("clip.avi")) == cv2.CAP_FFMPEG
    assert capture_api(parse_source("synthetic")) == cv2.CAP_ANY


def test_open_params_only_streams_get_timeouts():
    stream = open_params(parse_source("rtsp://cam/x"), open_timeout=2.5, read_timeout=7.0)
    assert stream == [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2500, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 7000]
    for source in ("/dev/video0", "clip.avi", "synthetic"):
        assert open_params(parse_source(source), open_timeout=1, read_timeout=1) == []


def test_paced_kinds():
    assert [parse_source(s).paced for s in ("0", "rtsp://c/x", "a.avi", "synthetic")] == [
        False,
        False,
        True,
        True,
    ]


class _FpsCap:
    def __init__(self, fps):
        self.fps = fps

    def get(self, prop):
        assert prop == cv2.CAP_PROP_FPS
        return self.fps


@pytest.mark.parametrize(
    ("reported", "expected"), [(25.0, 25.0), (0.0, 12.0), (math.nan, 12.0), (90000.0, 12.0)]
)
def test_source_fps_falls_back_on_nonsense(reported, expected):
    assert source_fps(_FpsCap(reported), 12.0) == expected


# ---- synthetic pattern ---------------------------------------------------------------


def test_pattern_is_deterministic_and_moves():
    a = render_pattern(7, 320, 240)
    b = PatternRenderer(320, 240).render(7)
    assert a.shape == (240, 320, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_pattern(8, 320, 240))


@pytest.mark.parametrize("index", [0, 1, 255, 123456, 2**31 + 5, 2**32 - 1])
@pytest.mark.parametrize("size", [(32, 32), (64, 48), (640, 480)])
def test_index_code_round_trip(index, size):
    assert decode_index(render_pattern(index, *size)) == index


def test_index_code_wraps_at_32_bits():
    image = np.zeros((48, 64, 3), np.uint8)
    encode_index(image, 2**32 + 9)
    assert decode_index(image) == 9


def test_renderer_draws_in_place_and_rejects_tiny_sizes():
    renderer = PatternRenderer(64, 48)
    out = np.zeros((48, 64, 3), np.uint8)
    assert renderer.render(3, out) is out
    wrong = np.zeros((10, 10, 3), np.uint8)
    assert renderer.render(3, wrong) is not wrong
    with pytest.raises(ValueError, match="32x32"):
        PatternRenderer(16, 48)


def test_synthetic_capture_reads_consecutive_frames():
    cap = SyntheticCapture(64, 48, fps=12.5)
    assert cap.isOpened()
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
    assert cap.get(cv2.CAP_PROP_FPS) == 12.5
    buf = np.empty((48, 64, 3), np.uint8)
    indices = []
    for _ in range(3):
        ok, frame = cap.read(buf)
        assert ok and frame is buf
        indices.append(decode_index(frame))
    assert indices == [0, 1, 2]
    assert cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    assert decode_index(cap.read()[1]) == 100
    assert not cap.set(cv2.CAP_PROP_FRAME_WIDTH, 10)
    cap.release()
    assert not cap.isOpened() and cap.read() == (False, None)


def test_open_capture_synthetic_size_precedence():
    spec_sized = open_capture(parse_source("synthetic:64x48@5"), name="t", width=320, height=240)
    assert spec_sized.get(cv2.CAP_PROP_FRAME_WIDTH) == 64
    assert spec_sized.get(cv2.CAP_PROP_FPS) == 5
    config_sized = open_capture(parse_source("synthetic"), name="t", width=320, height=240, fps=8)
    assert config_sized.get(cv2.CAP_PROP_FRAME_HEIGHT) == 240
    assert config_sized.get(cv2.CAP_PROP_FPS) == 8
    default = open_capture(parse_source("synthetic"), name="t")
    assert default.get(cv2.CAP_PROP_FRAME_WIDTH) == 640


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name is empty"),
        ({"reopen_initial": 0}, "reopen_initial must be > 0"),
        ({"stale_after": math.nan}, "stale_after must be > 0"),
        ({"reopen_initial": 2.0, "reopen_max": 1.0}, "reopen_max must be finite"),
        ({"reopen_max": math.inf}, "reopen_max must be finite"),
        ({"source": "ftp://x/y"}, "unsupported camera URL scheme"),
    ],
)
def test_camera_rejects_bad_settings(kwargs, message):
    args = {"name": "cam", "source": "synthetic", **kwargs}
    with pytest.raises(ConfigError, match=message):
        Camera(args.pop("name"), args.pop("source"), **args)


@pytest.mark.parametrize("debug", [False, True])
def test_opencv_warnings_stay_off_stderr_unless_debugging(debug):
    """A missing device makes OpenCV warn on stderr; the daemon keeps that chatter out of
    its log (it logs the failure itself) unless it runs at DEBUG level."""
    import subprocess

    code = (
        "import cv2\n"
        "from edge_agent.capture.sources import quiet_opencv\n"
        f"quiet_opencv(debug={debug})\n"
        "cv2.VideoCapture(63, cv2.CAP_V4L2).release()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ("[ WARN" in proc.stderr) is debug, proc.stderr
