"""tools/bench_resize.py runs on the shared models and compares both filters with the
full-frame reference for every classifier and reduced source."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.paths import REPO, shared_file

KEYS = {f"{s}/{f}" for s in ("fitted_320x240", "decoded_half") for f in ("area", "bilinear")}


def test_bench_resize_reports_both_filters_for_every_classifier_and_source():
    shared = shared_file("models/mobilenet_v2_1.0_224_quant.tflite").parents[1]
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_resize.py"), "--repeats", "3", "--crops", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "EDGE_AGENT_SHARED": str(shared)},
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["crops"] == 8  # 2 of each of the 4 photos
    assert len(report["models"]) == 3
    for entry in report["models"].values():
        assert set(entry["resize_ms_from_320x240"]) == {"area", "bilinear"}
        assert all(ms > 0 for ms in entry["resize_ms_from_320x240"].values())
        assert set(entry) >= KEYS
        for key in KEYS:
            assert 0.0 <= entry[key]["top1_as_reference"] <= 1.0
            assert 0.0 <= entry[key]["score_moved_median"] <= entry[key]["score_moved_max"] <= 1.0
    # A reduced frame does not change mobilenet_v2's answer on most crops, either filter.
    v2 = report["models"]["mobilenet_v2_1.0_224_quant.tflite"]
    assert v2["fitted_320x240/area"]["top1_as_reference"] >= 0.5
    assert v2["fitted_320x240/bilinear"]["top1_as_reference"] >= 0.5
