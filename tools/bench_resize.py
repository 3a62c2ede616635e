"""Benchmark: the frame's resize to the model input, INTER_AREA against bilinear.

For a camera mode (``--size``, default 320x240: what ``camera.fit_model`` picks for a
224x224 model), times ``cv2.resize`` to each classifier's input with both filters, and
runs the shared photos, first resized to that mode with INTER_AREA (as the camera would
deliver them), through each classifier with the daemon's preprocessing set to "auto"
(INTER_AREA when shrinking) and to "linear" (bilinear): the top-1 and score of each.
Prints JSON; the figures are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.inference.model import LoadedModel, ModelOptions  # noqa: E402
from edge_agent.inference.postprocess import DecodeSettings  # noqa: E402

PHOTOS = ("cat.bmp", "cat_720p.jpg", "grace_hopper.bmp", "pets.jpg")
CLASSIFIERS = (
    "mobilenet_v2_1.0_224_quant.tflite",
    "mobilenet_edgetpu_0.75_224_post_training_quant.tflite",
    "mobilenet_v1_0.25_128_quant.tflite",
)


def time_resize(frame, size: tuple[int, int], interpolation: int, n: int) -> float:
    """Median ms of ``n`` resizes of ``frame`` to ``size``."""
    out = []
    for _ in range(n):
        start = time.perf_counter()
        cv2.resize(frame, size, interpolation=interpolation)
        out.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.environ.get("EDGE_AGENT_SHARED", "../shared"))
    parser.add_argument("--size", default="320x240", help="the camera mode, WxH")
    parser.add_argument("--repeats", type=int, default=500)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # the daemon's pipeline resizes on one core
    shared = Path(args.shared)
    width, height = (int(v) for v in args.size.split("x"))
    frames = {
        name: cv2.resize(
            cv2.imread(str(shared / "images" / name)), (width, height), interpolation=cv2.INTER_AREA
        )
        for name in PHOTOS
    }
    report = {"size": [width, height], "models": {}}
    for model_name in CLASSIFIERS:
        model = LoadedModel.load(
            ModelOptions(
                path=str(shared / "models" / model_name),
                labels=str(shared / "models" / "imagenet_labels.txt"),
                device="cpu",
                num_threads=1,
                settings=DecodeSettings(threshold=0.0, top_k=1, iou=0.45),
            )
        )
        pre = model.codec.preprocessor
        entry = {
            "resize_ms": {
                name: time_resize(frames["cat.bmp"], (pre.width, pre.height), flag, args.repeats)
                for name, flag in (("auto", cv2.INTER_AREA), ("linear", cv2.INTER_LINEAR))
            },
            "top1": {},
        }
        for photo, frame in frames.items():
            answers = {}
            for interpolation in ("auto", "linear"):
                pre.interpolation = interpolation
                top = model.infer(frame).results[0]
                answers[interpolation] = [top.label, round(top.score, 3)]
            entry["top1"][photo] = answers
        report["models"][model_name] = entry
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
