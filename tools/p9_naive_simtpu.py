"""P9 first figure: a naive single-thread loop (JPEG decode, INTER_AREA resize, simulated
Edge TPU invoke, outputs) on a 640x480 frame. Usage: p9_naive_simtpu.py MODEL INVOKE_MS."""

import sys
import time

import cv2

from edge_agent.inference.backends.base import ModelRequest
from edge_agent.tools.bench.simtpu import SimulatedTpuBackend

model, ms = sys.argv[1], float(sys.argv[2])
s = SimulatedTpuBackend(invoke_ms=ms).open(ModelRequest(model, None, "usb", 1))
h, w = s.input.shape[1:3]
img = cv2.imread(sys.argv[3])
img = cv2.resize(img, (640, 480))
ok, jpg = cv2.imencode(".jpg", img)
n = 300
c0 = time.process_time()
t0 = time.perf_counter()
for _ in range(n):
    f = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    x = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
    s.set_input(x[None].astype(s.input.dtype))
    s.invoke()
    s.output_arrays()
dt = time.perf_counter() - t0
cpu = time.process_time() - c0
print(
    f"{model.split('/')[-1]} sim {ms} ms: {n / dt:.1f} fps "
    f"(target {0.95 * 1000 / ms:.0f}), host CPU {cpu * 1000 / n:.2f} ms/frame"
)
