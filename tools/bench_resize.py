"""Benchmark: from a reduced frame to the model input, INTER_AREA against bilinear.

A camera in a mode near the model's input (``camera.fit_model``: 320x240 for 224x224) or
decoding at 1/2 (``camera.decode_scale = 2``) hands over frames that shrink by less than
2 into the model. There bilinear weighs every source pixel, and the preprocessor's
``"auto"`` takes it (edge_agent/inference/preprocess.py). This measures whether that costs
accuracy: for random 4:3 crops of the shared photos, each made a 640x480 frame, the
reference is the full frame resized with INTER_AREA (the reference pipeline of
../shared/README.md); each classifier then sees the reduced frame resized with
INTER_AREA and with bilinear, and the two are compared with the reference: how often the
top-1 is the reference's, and how far the reference top-1's score moved. Also times both
resizes from 320x240 (``cv2.setNumThreads(1)``, medians). Prints JSON.
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
import numpy as np

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
FILTERS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR}


def time_resize(frame: np.ndarray, size: tuple[int, int], interpolation: int, n: int) -> float:
    """Median ms of ``n`` resizes of ``frame`` to ``size``."""
    out = []
    for _ in range(n):
        start = time.perf_counter()
        cv2.resize(frame, size, interpolation=interpolation)
        out.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(out)


def frames(shared: Path, crops: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Per crop: the 640x480 frame, the fitted 320x240 mode and the 1/2 JPEG decode."""
    rng = np.random.default_rng(seed)
    out = []
    for name in PHOTOS:
        photo = cv2.imread(str(shared / "images" / name))
        h, w = photo.shape[:2]
        for _ in range(crops):
            ch = min(h, int(w * rng.uniform(0.6, 1.0) * 3 / 4))
            cw = min(w, ch * 4 // 3)
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            full = cv2.resize(
                photo[y : y + ch, x : x + cw], (640, 480), interpolation=cv2.INTER_AREA
            )
            jpeg = cv2.imencode(".jpg", full, [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
            out.append({
                "full": full,
                "fitted_320x240": cv2.resize(full, (320, 240), interpolation=cv2.INTER_AREA),
                "decoded_half": cv2.imdecode(jpeg, cv2.IMREAD_REDUCED_COLOR_2),
            })  # fmt: skip
    return out


def scores(model: LoadedModel, frame: np.ndarray, interpolation: int) -> dict[int, float]:
    """The classifier's score per class id for ``frame`` resized to its input."""
    pre = model.codec.preprocessor
    sized = cv2.resize(frame, (pre.width, pre.height), interpolation=interpolation)
    results = model.infer(sized).results  # already the input's size: no second resize
    return {r.id: r.score for r in results}


def top1(scored: dict[int, float]) -> int:
    """The class id scored highest."""
    return max(scored, key=scored.__getitem__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.environ.get("EDGE_AGENT_SHARED", "../shared"))
    parser.add_argument("--crops", type=int, default=25, help="crops per photo")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=500)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # the daemon's pipeline resizes on one core
    shared = Path(args.shared)
    cases = frames(shared, args.crops, args.seed)
    report = {"crops": len(cases), "models": {}}
    labels = shared / "models" / "imagenet_labels.txt"
    classes = len(labels.read_text().splitlines())  # every score, not only the top few
    for model_name in CLASSIFIERS:
        model = LoadedModel.load(
            ModelOptions(
                path=str(shared / "models" / model_name),
                labels=str(labels),
                device="cpu",
                num_threads=1,
                settings=DecodeSettings(threshold=0.0, top_k=classes, iou=0.45),
            )
        )
        pre = model.codec.preprocessor
        size = (pre.width, pre.height)
        entry = {
            "resize_ms_from_320x240": {
                name: round(time_resize(cases[0]["fitted_320x240"], size, flag, args.repeats), 3)
                for name, flag in FILTERS.items()
            }
        }
        tallies = {}
        for case in cases:
            ref = scores(model, case["full"], cv2.INTER_AREA)
            top = top1(ref)
            for source in ("fitted_320x240", "decoded_half"):
                for name, flag in FILTERS.items():
                    got = scores(model, case[source], flag)
                    tally = tallies.setdefault(f"{source}/{name}", {"same_top1": 0, "moved": []})
                    tally["same_top1"] += int(top1(got) == top)
                    tally["moved"].append(abs(got.get(top, 0.0) - ref[top]))
        for key, tally in tallies.items():
            moved = np.array(tally["moved"])
            entry[key] = {
                "top1_as_reference": round(tally["same_top1"] / len(cases), 3),
                "score_moved_median": round(float(np.median(moved)), 3),
                "score_moved_p95": round(float(np.percentile(moved, 95)), 3),
                "score_moved_max": round(float(moved.max()), 3),
            }
        report["models"][model_name] = entry
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
