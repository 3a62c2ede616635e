"""``edge-agent infer``: run a model on image and video files, one JSON line per image or
video frame."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from edge_agent.capture.videofile import is_video_path, read_frames
from edge_agent.cli import checked, config_type
from edge_agent.config.loader import field_check
from edge_agent.config.schema import ModelConfig
from edge_agent.errors import CaptureError, ModelError
from edge_agent.inference.devices import parse_device_spec
from edge_agent.inference.imagefile import read_image
from edge_agent.inference.model import LoadedModel, ModelOptions
from edge_agent.inference.postprocess import DecodeSettings, task_family


def _fraction(text: str) -> float:
    """argparse type: a number in 0..1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in 0..1, got {text}")
    return value


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _like_config(key: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """argparse type: the ``[model]`` config key's own check, so the option accepts
    exactly what the config file does (bounds declared once, in the schema; finite
    numbers only, so nothing non-JSON reaches the output)."""
    return config_type(field_check(ModelConfig, key), parse)


def _numbers(text: str) -> list[float]:
    """``N`` or ``R,G,B`` as numbers (the config check then counts and bounds them)."""
    return [float(v) for v in text.split(",")]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the subcommand."""
    p = sub.add_parser("infer", help="run a model on images or videos and print JSON results")
    p.add_argument("--model", required=True, help="model file (.tflite or _edgetpu.tflite)")
    p.add_argument("--cpu-model", default="", help="CPU twin of an Edge TPU model")
    p.add_argument("--labels", default="", help="label file")
    p.add_argument(
        "--top-k", type=_count, default=5, help="classification: best K (default 5, 0: no limit)"
    )
    p.add_argument(
        "--threshold",
        type=_fraction,
        default=None,
        help="minimum score (default 0.1 for classification, 0.25 for detection)",
    )
    p.add_argument("--iou", type=_fraction, default=0.45, help="detection NMS IoU (default 0.45)")
    p.add_argument(
        "--max-detections", type=_count, default=100, help="detection: best N (0: no limit)"
    )
    p.add_argument(
        "--mean",
        type=_like_config("input_mean", _numbers),
        default=None,
        help="input normalization (pixel - mean) / std: M or R,G,B (with --std); "
        "default: the model's metadata, else the documented rule",
    )
    p.add_argument(
        "--std", type=_like_config("input_std", _numbers), default=None, help="see --mean"
    )
    p.add_argument(
        "--task",
        default="auto",
        choices=["auto", "classification", "detection-ssd", "detection-yolo"],
    )
    p.add_argument("--resize", default="auto", choices=["auto", "stretch", "letterbox"])
    p.add_argument(
        "--device",
        type=checked(parse_device_spec),
        default="auto",
        help="auto, cpu, usb[:N] or pci[:N]",
    )
    p.add_argument(
        "--require-device",
        action="store_true",
        help="exit 2 instead of warning when --device is not what runs the model",
    )
    p.add_argument(
        "--threads",
        type=_like_config("num_threads", int),
        default=0,
        help="CPU threads (default 0: all cores)",
    )
    p.add_argument(
        "--every", type=_positive, default=1, help="videos: one frame in N (default 1: all)"
    )
    p.add_argument(
        "--max-frames", type=_count, default=0, help="videos: stop after N frames (0: all)"
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="FILE",
        help="images, or videos (.avi .mp4 .mkv .mov ...): every frame, none dropped",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model once, then print one JSON object per image.

    Returns:
        0 when every image was processed, 1 when some image could not be read, 2 when
        ``--require-device`` was given and the requested device does not run the model.
    """
    if not os.path.isfile(args.model):
        missing = "no such model file" if not os.path.exists(args.model) else "not a model file"
        raise ModelError(f"{args.model}: {missing}")
    if (args.mean is None) != (args.std is None):
        raise ModelError("--mean and --std go together")
    options = ModelOptions(
        path=args.model,
        cpu_model=args.cpu_model,
        labels=args.labels,
        device=args.device,
        num_threads=args.threads,
        task=args.task,
        resize=args.resize,
        input_mean=args.mean,
        input_std=args.std,
        settings=DecodeSettings(
            threshold=0.0, top_k=args.top_k, iou=args.iou, max_detections=args.max_detections
        ),
    )
    model = LoadedModel.load(options)
    warnings = list(model.codec.warnings)  # label-count mismatch, unreadable metadata ...
    fallback = _device_fallback(model, args.device)
    if fallback:
        # A specific device was asked for and a fallback runs instead: say so loudly.
        level = "error" if args.require_device else "warning"
        print(f"edge-agent infer: {level}: {fallback}", file=sys.stderr)
        if args.require_device:
            return 2
        warnings.append(fallback)
    threshold = args.threshold
    if threshold is None:
        threshold = 0.1 if model.task == "classification" else 0.25
    model.codec.decoder.settings = model.codec.decoder.settings._replace(threshold=threshold)
    status = 0
    codec = model.codec
    described = {
        "family": codec.decoder.family,
        "labels_source": codec.labels_source,
        "normalization": codec.normalization.to_json() if codec.normalization else None,
    }
    for path in args.images:
        problem = _input_problem(path)
        if problem is None and is_video_path(path):
            status = max(status, _infer_video(model, path, described, warnings, args))
            continue
        read = read_image(path) if problem is None else None
        if read is None or read.image is None:
            reason = problem or read.error
            print(f"edge-agent infer: error: {path}: {reason}", file=sys.stderr)
            status = 1
            continue
        line = {"image": path, **_result(model.infer(read.image), described)}
        print(json.dumps({**line, "warnings": warnings + list(read.warnings)}), flush=True)
    return status


def _device_fallback(model: LoadedModel, device: str) -> str | None:
    """When a specific device was asked for and another runs the model, say which and
    why (None when ``auto`` or when the device asked for runs it)."""
    if device == "auto" or not model.engine.attempts:
        return None
    reasons = "; ".join(f"{a.backend}: {a.reason}" for a in model.engine.attempts)
    return f"running on {model.engine.backend}, not {device} ({reasons})"


def _input_problem(path: str) -> str | None:
    """Why a FILE argument cannot be an image or a video, before trying to open it."""
    if path == "-":
        return "reading from stdin is not supported: give the file's name"
    if os.path.isdir(path):
        return "is a directory, not an image or video file"
    if os.path.exists(path) and not os.path.isfile(path):  # <(curl ...) is a pipe
        return (
            "not a regular file (a pipe, a socket or a device): "
            "give the name of an image or video file"
        )
    if not is_video_path(path) and not os.path.isfile(path):
        return "cannot read image: no such file"  # videos: the video reader says it
    return None


def _result(out: Any, described: dict[str, Any]) -> dict[str, Any]:
    """The JSON fields of one inference."""
    return {
        "model": out.model_path,
        "backend": out.backend,
        "task": task_family(out.task),
        **described,
        "inference_ms": round(out.inference_ms, 3),
        "results": [r.to_json() for r in out.results],
    }


def _infer_video(
    model: LoadedModel,
    path: str,
    described: dict[str, Any],
    warnings: list[str],
    args: argparse.Namespace,
) -> int:
    """One JSON line per frame of a video, in order; 0 when it was read to the end.

    Every line carries the model's load-time ``warnings``, as image lines do.
    """
    try:
        _info, frames = read_frames(path, every=args.every, max_frames=args.max_frames)
        for frame in frames:
            line = {"video": path, "frame": frame.index, "timestamp_ms": frame.timestamp_ms}
            line.update(_result(model.infer(frame.image), described), warnings=warnings)
            print(json.dumps(line), flush=True)
    except CaptureError as exc:
        print(f"edge-agent infer: error: {exc}", file=sys.stderr)
        return 1
    return 0
