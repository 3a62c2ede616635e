"""Tier 2: ``edge-agent infer`` as a user runs it: JSON lines out, one-line errors."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.support.paths import fixture_model, shared_file


def infer(*args):
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "infer", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_detection_json_lines():
    proc = infer(
        "--model",
        str(shared_file("models/yolov8n_full_integer_quant_edgetpu.tflite")),
        "--labels",
        str(shared_file("models/yolov8n_labels.txt")),
        str(shared_file("images/pets.jpg")),
        str(shared_file("images/cat.bmp")),
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["image"].rsplit("/", 1)[1] for line in lines] == ["pets.jpg", "cat.bmp"]
    first = lines[0]
    assert first["backend"] == "cpu" and first["task"] == "detection"
    assert first["model"].endswith("yolov8n_full_integer_quant.tflite")  # the twin ran
    assert [r["label"] for r in first["results"][:2]] == ["dog", "dog"]
    assert all(len(r["box"]) == 4 for r in first["results"])
    scores = [r["score"] for r in first["results"]]
    assert scores == sorted(scores, reverse=True)


def test_classification_has_no_boxes():
    proc = infer(
        "--model",
        str(shared_file("models/mobilenet_v2_1.0_224_quant.tflite")),
        "--labels",
        str(shared_file("models/imagenet_labels.txt")),
        "--top-k",
        "3",
        str(shared_file("images/grace_hopper.bmp")),
    )
    out = json.loads(proc.stdout)
    assert out["task"] == "classification" and len(out["results"]) <= 3
    assert out["results"][0]["label"] == "military uniform"
    assert "box" not in out["results"][0]


@pytest.mark.parametrize(
    "model, message",
    [
        ("missing.tflite", "no such model file"),
        (str(fixture_model("not_a_model.tflite")), "not a TFLite model"),
        (str(fixture_model("orphan_edgetpu.tflite")), "no CPU twin was found"),
        (str(fixture_model("per_channel_input.tflite")), "per-channel quantization"),
    ],
)
def test_bad_model_is_one_line_error(model, message, tmp_path):
    img = tmp_path / "x.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    proc = infer("--model", model, str(img))
    assert proc.returncode == 2
    assert proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edge-agent")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in proc.stderr


def test_unreadable_image_is_reported_and_others_still_run(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    proc = infer(
        "--model",
        str(fixture_model("color_uint8.tflite")),
        str(bad),
        str(shared_file("images/cat.bmp")),
    )
    assert proc.returncode == 1
    assert f"{bad}: cannot read image" in proc.stderr
    assert len(proc.stdout.splitlines()) == 1


def test_bad_device_is_a_usage_error_not_a_traceback():
    proc = infer("--model", str(fixture_model("color_uint8.tflite")), "--device", "gpu", "x.png")
    assert proc.returncode == 2
    assert "argument --device: invalid device 'gpu'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_explicit_tpu_request_falling_back_warns():
    proc = infer(
        "--model",
        str(fixture_model("color_uint8_edgetpu.tflite")),
        "--device",
        "usb",
        str(shared_file("images/cat.bmp")),
    )
    assert proc.returncode == 0
    line = json.loads(proc.stdout)
    assert line["backend"] == "cpu"
    assert "warning: running on cpu, not usb (edgetpu: no Edge TPU matching 'usb'" in proc.stderr
    assert [w.split(" (")[0] for w in line["warnings"]] == ["running on cpu, not usb"]


def test_runtime_chatter_stays_off_stderr_and_json_says_what_was_assumed():
    proc = infer(
        "--model",
        str(shared_file("models/mobilenet_edgetpu_0.75_224_post_training_quant.tflite")),
        "--top-k",
        "1",
        str(shared_file("images/cat.bmp")),
    )
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK" not in proc.stderr and "INFO:" not in proc.stderr
    line = json.loads(proc.stdout)
    assert line["results"][0]["id"] == 286 and line["labels_source"] == "none"
    assert line["normalization"]["source"] == "guess" and line["warnings"] == []
    assert line["family"] == "classification"


def test_mean_std_override():
    model = str(shared_file("models/mobilenet_edgetpu_0.75_224_post_training_quant.tflite"))
    proc = infer(
        "--model", model, "--mean", "0", "--std", "1,1,1", str(shared_file("images/cat.bmp"))
    )
    assert proc.returncode == 0, proc.stderr
    norm = json.loads(proc.stdout)["normalization"]
    assert (norm["mean"], norm["std"], norm["source"]) == ([0, 0, 0], [1, 1, 1], "config")
    proc = infer("--model", model, "--mean", "1,2", str(shared_file("images/cat.bmp")))
    assert proc.returncode == 2 and "expected array of 1 or 3 numbers" in proc.stderr


def test_truncated_jpeg_is_flagged_in_the_json(tmp_path):
    data = shared_file("images/pets.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    proc = infer("--model", str(fixture_model("color_uint8.tflite")), str(cut))
    assert proc.returncode == 0, proc.stderr
    assert "Premature end" not in proc.stderr
    warnings = json.loads(proc.stdout)["warnings"]
    assert any("truncated JPEG" in w for w in warnings)


def test_zero_means_no_limit_for_top_k_and_max_detections(tmp_path):
    blobs = tmp_path / "blobs.png"
    image = np.zeros((64, 64, 3), np.uint8)
    image[8:16, 16:24] = (0, 0, 255)
    image[40:48, 40:48] = (0, 255, 0)
    assert cv2.imwrite(str(blobs), image)

    def results(model, photo, *args):
        proc = infer("--model", model, "--threshold", "0.01", *args, str(photo))
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["results"]

    ssd = str(fixture_model("ssd_postprocess.tflite"))
    unlimited = results(ssd, blobs, "--max-detections", "0")
    assert [r["label"] for r in unlimited] == ["0", "1"]  # no labels given: the ids
    assert unlimited == results(ssd, blobs, "--max-detections", "1000")
    assert len(results(ssd, blobs, "--max-detections", "1")) == 1
    yolo = str(shared_file("models/yolov8n_full_integer_quant.tflite"))
    photo = shared_file("images/grace_hopper.bmp")
    unlimited = results(yolo, photo, "--max-detections", "0")
    assert len(unlimited) > 2 and unlimited == results(yolo, photo, "--max-detections", "1000")
    cls = str(shared_file("models/mobilenet_v2_1.0_224_quant.tflite"))
    every = results(cls, photo, "--top-k", "0")
    assert len(every) > 1 and every == results(cls, photo, "--top-k", "1001")


def test_require_device_makes_a_fallback_an_error():
    proc = infer(
        "--model",
        str(fixture_model("color_uint8_edgetpu.tflite")),
        "--device",
        "usb",
        "--require-device",
        str(shared_file("images/cat.bmp")),
    )
    assert proc.returncode == 2
    assert proc.stdout == ""  # nothing was inferred on the wrong device
    assert "error: running on cpu, not usb (edgetpu: no Edge TPU matching 'usb'" in proc.stderr


def _clip(path, stills, repeat, fps=10.0):
    """An MJPG clip of each still shown ``repeat`` frames, all at the first still's size."""
    first = cv2.imread(str(stills[0]))
    size = (first.shape[1], first.shape[0])
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert out.isOpened()
    for still in stills:
        image = cv2.resize(cv2.imread(str(still)), size)
        for _ in range(repeat):
            out.write(image)
    out.release()
    return path


def test_video_gives_one_line_per_frame_in_order(tmp_path):
    pets, cat = shared_file("images/pets.jpg"), shared_file("images/cat.bmp")
    clip = _clip(tmp_path / "clip.avi", [pets, cat], 3)
    model = ["--model", str(shared_file("models/yolov8n_full_integer_quant.tflite"))]
    model += ["--labels", str(shared_file("models/yolov8n_labels.txt"))]
    proc = infer(*model, str(clip), str(pets))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    frames = [line for line in lines if "video" in line]
    assert [f["frame"] for f in frames] == [0, 1, 2, 3, 4, 5]  # every frame, in order
    assert [f["timestamp_ms"] for f in frames] == pytest.approx([0, 100, 200, 300, 400, 500])
    assert all(f["task"] == "detection" and f["backend"] == "cpu" for f in frames)
    assert all(f["results"][0]["label"] == "dog" for f in frames[:3])
    assert all(f["results"][0]["label"] == "cat" for f in frames[3:])
    assert lines[-1]["image"] == str(pets)  # images and videos mix in one call
    assert lines[-1]["results"][0]["label"] == frames[0]["results"][0]["label"]

    strided = infer(*model, "--every", "2", "--max-frames", "2", str(clip))
    assert [json.loads(x)["frame"] for x in strided.stdout.splitlines()] == [0, 2]


def test_unreadable_video_is_one_error_line(tmp_path):
    fake = tmp_path / "broken.mp4"
    fake.write_bytes(b"not a video at all" * 100)
    model = str(fixture_model("color_uint8.tflite"))
    proc = infer("--model", model, str(fake), str(tmp_path / "missing.avi"))
    assert proc.returncode == 1 and proc.stdout == ""
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("edge-agent infer: error: ") for e in errors)
    assert "broken.mp4" in errors[0] and "no such video file" in errors[1]
    bad = infer("--model", model, "--every", "0", str(fake))
    assert bad.returncode == 2 and "expected an integer >= 1" in bad.stderr


def _yolo_label_files(tmp_path):
    """yolov8n's 80 COCO names as a TF OD API label map and as a 1-based id file."""
    names = shared_file("models/yolov8n_labels.txt").read_text().split("\n")[:80]
    pbtxt = tmp_path / "label_map.pbtxt"
    pbtxt.write_text(
        "# TF Object Detection API\n"
        + "".join(
            f'item {{\n  name: "/m/{i}"\n  id: {i}\n  display_name: "{n}"\n}}\n'
            for i, n in enumerate(names, start=1)
        )
    )
    one_based = tmp_path / "one_based.txt"
    one_based.write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, start=1)))
    return pbtxt, one_based


def test_label_maps_and_one_based_ids_name_the_right_classes(tmp_path):
    model = str(shared_file("models/yolov8n_full_integer_quant.tflite"))
    photo = str(shared_file("images/grace_hopper.bmp"))
    for labels in _yolo_label_files(tmp_path):
        proc = infer("--model", model, "--labels", str(labels), photo)
        assert proc.returncode == 0, proc.stderr
        line = json.loads(proc.stdout)
        assert [(r["id"], r["label"]) for r in line["results"]] == [(0, "person"), (27, "tie")]
        assert line["labels_source"] == "file" and line["warnings"] == []


def test_load_warnings_are_in_every_json_line(tmp_path):
    clip = _clip(tmp_path / "clip.avi", [shared_file("images/cat.bmp")], 2)
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    model = str(shared_file("models/yolov8n_full_integer_quant.tflite"))
    proc = infer(
        "--model", model, "--labels", str(labels), str(shared_file("images/cat.bmp")), str(clip)
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 3 and "image" in lines[0] and "video" in lines[1]
    expected = f"{labels}: the label file has 3 entries but the model has 80 classes"
    assert all(len(x["warnings"]) == 1 and x["warnings"][0].startswith(expected) for x in lines)


def test_raw_mjpeg_frames_get_sane_timestamps(tmp_path):
    # A raw MJPEG stream (concatenated JPEGs) has no timestamps: OpenCV says -3.7e20.
    raw = tmp_path / "raw.mjpeg"
    frames = [np.full((48, 64, 3), value, np.uint8) for value in (0, 128, 255)]
    raw.write_bytes(b"".join(cv2.imencode(".jpg", f)[1].tobytes() for f in frames))
    proc = infer("--model", str(fixture_model("color_uint8.tflite")), str(raw))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2]
    times = [x["timestamp_ms"] for x in lines]
    assert times[0] == 0 and 0 < times[1] < times[2] and times[2] == pytest.approx(2 * times[1])
    assert all(x["warnings"] == [] for x in lines)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mean", "inf", "--std", "1"], "argument --mean: expected number, got inf"),
        (["--mean", "0", "--std", "nan"], "argument --std: expected number > 0, got nan"),
        (["--mean", "0", "--std", "0"], "argument --std: expected number > 0, got 0.0"),
        (["--mean", "0", "--std", "1,-1,1"], "expected number > 0, got -1.0 (value [1])"),
        (["--threads", "999999"], "argument --threads: expected integer 0..256, got 999999"),
        (["--threads", "-1"], "argument --threads: expected integer 0..256, got -1"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(args, message):
    model = str(fixture_model("color_uint8.tflite"))
    proc = infer("--model", model, *args, str(shared_file("images/cat.bmp")))
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_directory_or_stdin_is_a_clear_error(tmp_path):
    (tmp_path / "clips.mp4").mkdir()
    model = str(fixture_model("color_uint8.tflite"))
    proc = infer("--model", model, str(tmp_path), str(tmp_path / "clips.mp4"), "-")
    assert proc.returncode == 1 and proc.stdout == ""
    directory = "is a directory, not an image or video file"
    assert proc.stderr.splitlines() == [
        f"edge-agent infer: error: {tmp_path}: {directory}",
        f"edge-agent infer: error: {tmp_path / 'clips.mp4'}: {directory}",
        "edge-agent infer: error: -: reading from stdin is not supported: give the file's name",
    ]


def test_an_image_opencv_refuses_to_decode_is_one_error_line(tmp_path):
    # A PNG whose header claims 60000 x 60000 pixels: OpenCV's imread raises (its size
    # limit), it does not return None. It must read as any unreadable image does.
    import struct
    import zlib

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    huge = tmp_path / "panorama.png"
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    huge.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
    )
    proc = infer(
        "--model", str(fixture_model("color_uint8.tflite")), str(huge),
        str(shared_file("images/cat.bmp")),
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1
    errors = proc.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"edge-agent infer: error: {huge}: "), errors
    assert [json.loads(line)["image"] for line in proc.stdout.splitlines()] == [
        str(shared_file("images/cat.bmp"))
    ]


def test_a_video_without_a_single_frame_is_an_error_not_silence(tmp_path):
    # A recording cut right after its header opens fine and has no frame: it printed
    # nothing at all and exited 0, as if every file had been evaluated.
    empty = tmp_path / "cut.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()
    proc = infer(
        "--model", str(fixture_model("color_uint8.tflite")), str(empty),
        str(shared_file("images/cat.bmp")),
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"edge-agent infer: error: {empty}: no frame could be read"]
    assert len(proc.stdout.splitlines()) == 1


def test_file_names_that_are_not_utf8_are_read(tmp_path):
    # A Latin-1 name ("caf\xe9.bmp" from an old share) reaches Python as a lone surrogate;
    # OpenCV's binding crashed on it (SIGSEGV, exit 139) for images and videos alike.
    image = os.fsencode(tmp_path) + b"/caf\xe9 cat.bmp"
    video = os.fsencode(tmp_path) + b"/caf\xe9.avi"
    with open(image, "wb") as f:
        f.write(shared_file("images/cat.bmp").read_bytes())
    clip = cv2.VideoWriter(
        str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)
    )
    for level in (0, 120):
        clip.write(np.full((48, 64, 3), level, np.uint8))
    clip.release()
    os.rename(tmp_path / "clip.avi", video)  # OpenCV cannot be given that name, even here
    model = str(fixture_model("color_uint8.tflite"))
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "infer", "--model", model, image, video],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line.get("image", line.get("video")) for line in lines] == [
        os.fsdecode(image), os.fsdecode(video), os.fsdecode(video)
    ]  # fmt: skip
    same = json.loads(infer("--model", model, str(shared_file("images/cat.bmp"))).stdout)
    assert lines[0]["results"] == same["results"]


def test_a_pipe_or_a_directory_is_not_said_to_be_missing(tmp_path):
    # `infer --model m.tflite <(curl -s cam/snap.jpg)` gives /dev/fd/63, a pipe: it was
    # reported as "no such file", as was a model path that is a directory.
    for name in ("snap.jpg", "clip.avi"):
        os.mkfifo(tmp_path / name)
    model = str(fixture_model("color_uint8.tflite"))
    proc = infer("--model", model, str(tmp_path / "snap.jpg"), str(tmp_path / "clip.avi"))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"edge-agent infer: error: {tmp_path / name}: not a regular file (a pipe, a socket "
        "or a device): give the name of an image or video file"
        for name in ("snap.jpg", "clip.avi")
    ]
    proc = infer("--model", str(tmp_path), str(shared_file("images/cat.bmp")))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"edge-agent infer: error: {tmp_path}: not a model file"


def test_scores_that_overflow_are_no_results_and_the_output_stays_json(tmp_path):
    # --std 1e-38 passes the config's check (std > 0), and the float model's scores
    # overflow to inf: they were printed as the non-JSON token Infinity.
    def strict(constant):
        raise AssertionError(f"non-JSON number {constant} in the output")

    model = str(fixture_model("color_float.tflite"))
    for args in (["--mean", "0", "--std", "1e-38"], ["--mean", "0", "--std", "1"]):
        proc = infer(
            "--model", model, "--threshold", "0", *args, str(shared_file("images/cat.bmp"))
        )
        assert proc.returncode == 0, proc.stderr
        results = json.loads(proc.stdout, parse_constant=strict)["results"]
        assert all(np.isfinite(r["score"]) for r in results)
    assert len(results) == 3  # finite scores are kept, as before
