"""Tier 2: what a running model asks of a fitted camera (``camera.fit_model``), and what
the fitted mode does to real models' answers on the shared photos."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from edge_agent.capture import camera as camera_module
from edge_agent.capture.camera import Camera
from edge_agent.capture.sources import open_capture, parse_source
from edge_agent.capture.v4l2 import DeviceSizes, FitTarget, FrameSize, ModelFit, choose_size
from edge_agent.config import CameraConfig
from edge_agent.daemon.startup import codec_fit, model_fit
from edge_agent.errors import CaptureError
from edge_agent.inference.adapters.common import BBox
from edge_agent.inference.codec import make_codec
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.supervisor import Supervisor
from tests.component.test_decode_scale import PHOTOS, same_top1
from tests.component.test_inference_real import load
from tests.support.paths import fixture_model, shared_file
from tests.unit.test_v4l2 import MOBILENET, WEBCAM, YOLO


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("color_uint8.tflite", ModelFit(32, 32, letterbox=False)),  # a classifier: stretched
        ("yolo_tiny_int8.tflite", ModelFit(64, 64, letterbox=True)),  # YOLO: letterboxed
    ],
)
def test_the_running_model_gives_its_input_size_and_resize(model, expected):
    options = ModelOptions(path=str(fixture_model(model)), device="cpu", num_threads=1)
    sup = Supervisor(options, make_codec, deadline=5.0)
    sup.start()
    try:
        assert model_fit(sup) == expected
    finally:
        sup.stop()


def mjpg_frame(image: np.ndarray, size: FrameSize) -> np.ndarray:
    """What a camera's MJPG mode of ``size`` delivers of a scene, decoded."""
    scaled = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", scaled, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def test_mobilenet_v2_keeps_its_answers_at_the_mode_fit_model_picks():
    """A webcam's default 640x480 against the mode chosen for a 224x224 input (320x240):
    the same top-1 on every shared photo, and the README's scores within 0.08."""
    model = load("mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt", threshold=0.05)
    default = FrameSize(640, 480)
    fitted = choose_size(DeviceSizes(WEBCAM), codec_fit(model.codec), default)
    assert fitted == (320, 240)
    photos = [(name, cv2.imread(str(shared_file(f"images/{name}")))) for name in PHOTOS]
    pairs = [(n, mjpg_frame(p, default), mjpg_frame(p, fitted)) for n, p in photos]
    print("fit_model, mobilenet_v2 top-1 (640x480 -> 320x240): " + same_top1(model, pairs))


def test_yolov8n_finds_the_same_objects_at_the_mode_fit_model_picks():
    """A 1280x720 default against the 16:9 mode chosen for a letterboxed 640x640 input
    (640x360): the same objects, boxes at IoU >= 0.85 in the frame's own scale."""
    model = load("yolov8n_full_integer_quant.tflite", "yolov8n_labels.txt")
    default = FrameSize(1280, 720)
    offered = DeviceSizes((*WEBCAM, FrameSize(640, 360), FrameSize(424, 240)))
    fitted = choose_size(offered, codec_fit(model.codec), default)
    assert fitted == (640, 360)
    for name in PHOTOS:
        photo = cv2.imread(str(shared_file(f"images/{name}")))
        full = model.infer(mjpg_frame(photo, default)).results
        small = model.infer(mjpg_frame(photo, fitted)).results
        assert full, name
        for a in full:
            if a.score < 0.5:
                continue  # weak detections may cross the threshold either way
            b = max(
                (r for r in small if r.label == a.label),
                key=lambda r: BBox(*a.box).iou(BBox(*r.box).scale(2.0, 2.0)),
            )
            assert BBox(*a.box).iou(BBox(*b.box).scale(2.0, 2.0)) >= 0.85, (name, a, b)
            assert b.score == pytest.approx(a.score, abs=0.08), (name, a, b)


def test_a_camera_with_fit_model_opens_its_device_with_the_model_fit(monkeypatch):
    opened = threading.Event()
    seen: dict = {}

    def opener(spec, **kwargs):
        seen.update(kwargs)
        opened.set()
        raise CaptureError("no device here")

    monkeypatch.setattr(camera_module, "open_capture", opener)
    for fit_model, expected in ((True, MOBILENET), (False, None)):
        opened.clear()
        seen.clear()
        config = CameraConfig(name="front", source="/dev/video9", fit_model=fit_model)
        cam = Camera.from_config(config, fit=FitTarget(MOBILENET))
        cam.start()
        try:
            assert opened.wait(10.0)
        finally:
            assert cam.stop(5.0)
        assert seen.get("fit") == expected


def test_a_fitted_camera_reopens_its_source_for_a_new_model_input():
    """A webcam opened at 640x480 stands in as the synthetic pattern in the mode it would
    give for each fit: 320x240 for mobilenet_v2, 640x480 for a letterboxed 640 YOLO."""
    opens: list[ModelFit] = []
    reopened = threading.Event()

    def opener(spec, *, fit, name, **kwargs):
        opens.append(fit)
        if len(opens) == 2:
            reopened.set()
        opened = FrameSize(640, 480)
        mode = choose_size(DeviceSizes(WEBCAM), fit, opened) or opened
        device = parse_source(f"synthetic:{mode.width}x{mode.height}@200")
        return open_capture(device, name=name)

    target = FitTarget(MOBILENET)
    cam = Camera("front", "synthetic", opener=opener, fit=target)
    cam.start()
    try:
        assert cam.get(10.0).image.shape == (240, 320, 3)  # sized for mobilenet
        assert cam.stats().frame_size == (320, 240)  # as the status document shows it
        assert target.set(YOLO)  # a model switch
        assert reopened.wait(10.0)
        deadline = time.monotonic() + 10.0
        while cam.stats().frame_size != (640, 480) and time.monotonic() < deadline:
            cam.get(1.0)
        assert cam.get(10.0).image.shape == (480, 640, 3)
    finally:
        assert cam.stop(5.0)
    assert opens == [MOBILENET, YOLO]
    assert cam.stats().reconnects == 0  # a planned reopen, not a failure


def test_a_model_switch_during_an_outage_opens_once_for_the_new_model():
    opens: list[ModelFit] = []
    failed = threading.Event()

    def opener(spec, *, fit, **kwargs):
        opens.append(fit)
        if len(opens) == 1:
            failed.set()
            raise CaptureError("device unplugged")
        return open_capture(spec, **kwargs)

    target = FitTarget(MOBILENET)
    cam = Camera("front", "synthetic:64x48@200", opener=opener, fit=target, reopen_initial=2.0)
    cam.start()
    try:
        assert failed.wait(10.0)
        target.set(YOLO)  # the switch lands while the camera waits out its 2 s backoff
        for _ in range(20):  # frames of the new open, with no second reopen among them
            assert cam.get(10.0) is not None
    finally:
        assert cam.stop(5.0)
    assert opens == [MOBILENET, YOLO]
    assert cam.stats().reconnects == 1
