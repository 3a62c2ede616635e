"""tools/bench_resize.py runs on the shared models and reports every model and photo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.paths import REPO, shared_file


def test_bench_resize_reports_both_filters_for_every_classifier_and_photo():
    shared = shared_file("models/mobilenet_v2_1.0_224_quant.tflite").parents[1]
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "bench_resize.py"), "--repeats", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "EDGE_AGENT_SHARED": str(shared)},
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["size"] == [320, 240]
    assert len(report["models"]) == 3
    for entry in report["models"].values():
        assert set(entry["resize_ms"]) == {"auto", "linear"}
        assert all(ms > 0 for ms in entry["resize_ms"].values())
        assert set(entry["top1"]) == {"cat.bmp", "cat_720p.jpg", "grace_hopper.bmp", "pets.jpg"}
    # The resize to 224x224 keeps mobilenet_v2's answer on grace_hopper.bmp either way.
    grace = report["models"]["mobilenet_v2_1.0_224_quant.tflite"]["top1"]["grace_hopper.bmp"]
    assert grace["auto"][0] == grace["linear"][0] == "military uniform"
