"""The colour-blob detectors: hand-set weights that find saturated red, green and blue.

Shared by the SSD fixtures and the demo model. Everything here is exact arithmetic that
the tests re-compute with numpy, so nothing is trained and nothing is random.

Colour membership. For a pixel (or cell mean) with real channel values ``r, g, b`` in
[-1, 1) (the Coral input convention ``(q - 128) / 128``), the logit of class ``c`` is::

    logit_c = CONTRAST * (2 * x_c - x_other1 - x_other2 - THRESHOLD)

and the membership is ``sigmoid(logit_c)``. Pure red (255, 0, 0) gives logit 8.91 (0.9999),
grey gives -15, yellow (255, 255, 0) gives -3 for red and green (0.047): only saturated
primaries pass.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from tflite_builder import (
    BuiltinOperator,
    ModelBuilder,
    Quant,
    concatenation,
    conv2d_1x1,
    flexbuffer_map,
    pool2d,
    reshape,
)

LABELS = ("red", "green", "blue")
CONTRAST = 6.0
THRESHOLD = 2.5
CORAL_INPUT = Quant.per_tensor(1 / 128, 128)
# Decoder scales of TF's SSD exports; with all-zero box encodings they do not matter
# (0 / scale = 0, exp(0) = 1), so every decoded box is exactly its anchor.
BOX_CODER_SCALES = {"y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0}


def color_logit_weights(zero_one_domain: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(weights [3, 3], bias [3])`` so that ``logits = x @ weights.T + bias``.

    Args:
        zero_one_domain: True when the input is ``pixel / 255``-like in [0, 1] instead of
            [-1, 1); ``x' = 2 x - 1`` is folded into the weights (the constant cancels,
            since each row of weights sums to zero).

    Returns:
        float32 weights (row = class, column = input channel) and bias.
    """
    weights = CONTRAST * (3.0 * np.eye(3, dtype=np.float32) - 1.0)
    bias = np.full(3, -CONTRAST * THRESHOLD, dtype=np.float32)
    if zero_one_domain:
        weights = weights * 2.0
    return weights.astype(np.float32), bias


def grid_anchors(rows: int, cols: int, cells: tuple[int, int], grid: int) -> np.ndarray:
    """Anchors ``(ycenter, xcenter, h, w)`` of every window of ``cells`` in a grid.

    Args:
        rows: number of window positions vertically (row-major order, stride one cell).
        cols: number of window positions horizontally.
        cells: window size in cells (height, width).
        grid: cells per image side; coordinates are fractions of the image.

    Returns:
        float32 array [rows * cols, 4]; all values are exact binary fractions for a
        power-of-two grid.
    """
    kh, kw = cells
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    yc = (ii.ravel() + kh / 2) / grid
    xc = (jj.ravel() + kw / 2) / grid
    h = np.full(yc.shape, kh / grid)
    w = np.full(yc.shape, kw / grid)
    return np.stack([yc, xc, h, w], axis=1).astype(np.float32)


def postprocess_options(
    max_detections: int, detections_per_class: int, score: float, iou: float, regular: bool
) -> bytes:
    """The flexbuffer custom_options of ``TFLite_Detection_PostProcess`` for 3 classes."""
    return flexbuffer_map(
        {
            "max_detections": max_detections,
            "max_classes_per_detection": 1,
            "detections_per_class": detections_per_class,
            "nms_score_threshold": score,
            "nms_iou_threshold": iou,
            "num_classes": len(LABELS),
            "use_regular_nms": regular,
            **BOX_CODER_SCALES,
        }
    )


def add_postprocess_outputs(
    builder: ModelBuilder, max_detections: int, names: tuple[str, str, str, str]
) -> tuple[int, int, int, int]:
    """Add the four float outputs ``(boxes, classes, scores, count)`` of the postprocess op.

    Args:
        builder: the model being built.
        max_detections: the detection slots N.
        names: tensor names in the op's output order (boxes, classes, scores, count).

    Returns:
        The tensor indices in the op's output order.
    """
    boxes = builder.tensor(names[0], [1, max_detections, 4], np.float32)
    classes = builder.tensor(names[1], [1, max_detections], np.float32)
    scores = builder.tensor(names[2], [1, max_detections], np.float32)
    count = builder.tensor(names[3], [1], np.float32)
    return boxes, classes, scores, count


# --- the demo detector -----------------------------------------------------------------

DEMO_SIZE = 128
DEMO_CELL = 8
DEMO_WINDOWS = tuple((kh, kw) for kh in range(2, 7) for kw in range(2, 7))
DEMO_MAX_DETECTIONS = 10
DEMO_SCORE_THRESHOLD = 0.5
DEMO_IOU_THRESHOLD = 0.2


def demo_anchors() -> np.ndarray:
    """All anchors of the demo detector, in the order of its score rows."""
    grid = DEMO_SIZE // DEMO_CELL
    return np.concatenate(
        [grid_anchors(grid - kh + 1, grid - kw + 1, (kh, kw), grid) for kh, kw in DEMO_WINDOWS]
    )


def _add_window_scores(b: ModelBuilder, cells: int, padded: int, kh: int, kw: int) -> int:
    """Add ``score = mean(inside) - max(mean of each side)`` for every kh x kw window.

    The sides are the one-cell strips just outside the window (top, bottom, left, right),
    read from the padded grid where the window at (i, j) occupies rows i+1..i+kh and
    columns j+1..j+kw. Returns the [1, positions, 3] score tensor.
    """
    grid = DEMO_SIZE // DEMO_CELL
    rows, cols = grid - kh + 1, grid - kw + 1
    name = f"window_{kh}x{kw}"
    out_shape = [1, rows, cols, 3]
    inside = b.tensor(f"{name}/inside", out_shape, np.float32)
    b.builtin(BuiltinOperator.AVERAGE_POOL_2D, [cells], [inside], pool2d((kh, kw), (1, 1)))
    across = b.tensor(f"{name}/rows", [1, grid + 2, grid + 3 - kw, 3], np.float32)
    b.builtin(BuiltinOperator.AVERAGE_POOL_2D, [padded], [across], pool2d((1, kw), (1, 1)))
    down = b.tensor(f"{name}/columns", [1, grid + 3 - kh, grid + 2, 3], np.float32)
    b.builtin(BuiltinOperator.AVERAGE_POOL_2D, [padded], [down], pool2d((kh, 1), (1, 1)))
    size = b.constant(f"{name}/side_size", np.array(out_shape, np.int32))
    sides = []
    for side, source, (y, x) in (
        ("top", across, (0, 1)),
        ("bottom", across, (kh + 1, 1)),
        ("left", down, (1, 0)),
        ("right", down, (1, kw + 1)),
    ):
        begin = b.constant(f"{name}/{side}_begin", np.array([0, y, x, 0], np.int32))
        strip = b.tensor(f"{name}/{side}", out_shape, np.float32)
        b.builtin(BuiltinOperator.SLICE, [source, begin, size], [strip], schema.SliceOptionsT())
        sides.append(strip)
    worst = sides[0]
    for index, strip in enumerate(sides[1:]):
        larger = b.tensor(f"{name}/max_side_{index}", out_shape, np.float32)
        b.builtin(
            BuiltinOperator.MAXIMUM, [worst, strip], [larger], schema.MaximumMinimumOptionsT()
        )
        worst = larger
    score = b.tensor(f"{name}/score", out_shape, np.float32)
    b.builtin(BuiltinOperator.SUB, [inside, worst], [score])
    flat_shape = [1, rows * cols, 3]
    flat = b.tensor(f"{name}/scores", flat_shape, np.float32)
    target = b.constant(f"{name}/shape", np.array(flat_shape, np.int32))
    b.builtin(BuiltinOperator.RESHAPE, [score, target], [flat], reshape(flat_shape))
    return flat


def build_demo_detector() -> bytes:
    """The demo's SSD-style colour-blob detector (see models/demo/README.md).

    Returns:
        The model bytes: input 1x128x128x3 uint8 (1/128, 128), outputs boxes [1, 10, 4],
        classes [1, 10], scores [1, 10], count [1] (TF1 SSD order).
    """
    grid = DEMO_SIZE // DEMO_CELL
    b = ModelBuilder("edge-agent demo: saturated red/green/blue blob detector (hand-set)")
    image = b.tensor(
        "normalized_input_image_tensor", [1, DEMO_SIZE, DEMO_SIZE, 3], np.uint8, CORAL_INPUT
    )
    real = b.tensor("image_real", [1, DEMO_SIZE, DEMO_SIZE, 3], np.float32)
    b.builtin(BuiltinOperator.DEQUANTIZE, [image], [real])

    # Per-pixel membership first, then cell means: a cell half covered by red gets 0.5.
    weights, bias = color_logit_weights()
    w = b.constant("color_weights", weights.reshape(3, 1, 1, 3))
    bb = b.constant("color_bias", bias)
    logits = b.tensor("color_logits", [1, DEMO_SIZE, DEMO_SIZE, 3], np.float32)
    b.builtin(BuiltinOperator.CONV_2D, [real, w, bb], [logits], conv2d_1x1())
    member = b.tensor("color_membership", [1, DEMO_SIZE, DEMO_SIZE, 3], np.float32)
    b.builtin(BuiltinOperator.LOGISTIC, [logits], [member])
    cells = b.tensor("cell_fraction", [1, grid, grid, 3], np.float32)
    b.builtin(
        BuiltinOperator.AVERAGE_POOL_2D,
        [member],
        [cells],
        pool2d((DEMO_CELL, DEMO_CELL), (DEMO_CELL, DEMO_CELL)),
    )
    # A zero border of one cell, so windows touching the image edge still have four sides
    # (outside the image a side holds no colour, hence no penalty).
    border = b.constant("border_padding", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32))
    padded = b.tensor("cell_fraction_padded", [1, grid + 2, grid + 2, 3], np.float32)
    b.builtin(BuiltinOperator.PAD, [cells, border], [padded])
    rows = [_add_window_scores(b, cells, padded, kh, kw) for kh, kw in DEMO_WINDOWS]

    anchors = demo_anchors()
    count = anchors.shape[0]
    colors = b.tensor("class_scores", [1, count, 3], np.float32)
    b.builtin(BuiltinOperator.CONCATENATION, rows, [colors], concatenation(1))
    # Column 0 is the background the postprocess skips; a zero column keeps the layout.
    bg_pad = b.constant("background_padding", np.array([[0, 0], [0, 0], [1, 0]], np.int32))
    predictions = b.tensor("raw_outputs/class_predictions", [1, count, 4], np.float32)
    b.builtin(BuiltinOperator.PAD, [colors, bg_pad], [predictions])
    # All-zero box encodings (every box is its anchor), computed instead of stored.
    encodings = b.tensor("raw_outputs/box_encodings", [1, count, 4], np.float32)
    b.builtin(BuiltinOperator.ZEROS_LIKE, [predictions], [encodings])
    anchor_t = b.constant("anchors", anchors)

    outputs = add_postprocess_outputs(
        b,
        DEMO_MAX_DETECTIONS,
        (
            "TFLite_Detection_PostProcess",
            "TFLite_Detection_PostProcess:1",
            "TFLite_Detection_PostProcess:2",
            "TFLite_Detection_PostProcess:3",
        ),
    )
    options = postprocess_options(
        DEMO_MAX_DETECTIONS, 5, DEMO_SCORE_THRESHOLD, DEMO_IOU_THRESHOLD, regular=True
    )
    b.custom("TFLite_Detection_PostProcess", [encodings, predictions, anchor_t], outputs, options)
    return b.build([image], outputs)


# --- the demo clip ---------------------------------------------------------------------

CLIP_SIZE = (640, 480)
CLIP_FPS = 15
CLIP_FRAMES = 150
CLIP_JPEG_QUALITY = 80
# (label, RGB colour, side in pixels, path as (x0, x1, y0, y1, x period, y period) in
# frames). Each square keeps to its own lane, so squares never overlap and the truth below
# is exactly what is visible.
CLIP_SQUARES = (
    ("red", (235, 25, 25), 120, (15, 505, 15, 50, 100, 60)),
    ("green", (25, 215, 25), 100, (525, 15, 182, 196, 150, 50)),
    ("blue", (25, 25, 235), 140, (15, 190, 305, 330, 75, 150)),
    # Not a class: the detector must ignore it (its red and green logits are -3).
    ("yellow", (235, 235, 30), 90, (540, 345, 310, 380, 50, 75)),
)
CLIP_CLASSES = LABELS


def _triangle(frame: int, start: float, end: float, period: int) -> float:
    """Go from start to end and back once per period (a bounce)."""
    phase = (frame % period) / period
    fraction = 2 * phase if phase < 0.5 else 2 * (1 - phase)
    return start + (end - start) * fraction


def clip_boxes(frame: int) -> dict[str, tuple[int, int, int, int]]:
    """The squares drawn in a frame of the clip, as ``label: (x0, y0, x1, y1)`` pixels.

    ``x1``/``y1`` are exclusive; boxes never leave the 640x480 frame.
    """
    boxes = {}
    for label, _color, side, (x0, x1, y0, y1, px, py) in CLIP_SQUARES:
        x = round(_triangle(frame, x0, x1, px))
        y = round(_triangle(frame, y0, y1, py))
        boxes[label] = (x, y, x + side, y + side)
    return boxes


def clip_frame(frame: int) -> np.ndarray:
    """Render one clip frame as a BGR uint8 image (what cv2.VideoWriter takes)."""
    width, height = CLIP_SIZE
    # A dark vertical gradient: not flat (so the detector sees a real background), yet
    # smooth enough to keep the MJPG small.
    shade = np.linspace(30, 75, height, dtype=np.float32).round().astype(np.uint8)
    image = np.repeat(np.repeat(shade[:, None, None], width, axis=1), 3, axis=2)
    colors = {label: color for label, color, _side, _path in CLIP_SQUARES}
    for label, (x0, y0, x1, y1) in clip_boxes(frame).items():
        r, g, b = colors[label]
        image[y0:y1, x0:x1] = (b, g, r)
    return image


def clip_truth() -> dict:
    """The clip's ground truth, written beside it as JSON for tests and demos."""
    return {
        "size": list(CLIP_SIZE),
        "fps": CLIP_FPS,
        "classes": list(CLIP_CLASSES),
        "box_format": "x0, y0, x1, y1 in pixels, x1/y1 exclusive",
        "frames": [
            {label: list(box) for label, box in clip_boxes(i).items()} for i in range(CLIP_FRAMES)
        ],
    }
