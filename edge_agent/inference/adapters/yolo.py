"""YOLO raw outputs -> objects, with class-wise non-maximum suppression.

Two heads are decoded:

* YOLOv8 / YOLO11 (anchor-free): for each of N candidates (8400 for a 640 input, one per
  cell of the stride 8, 16 and 32 grids), ``cx, cy, w, h`` then ``nc`` class scores, as
  ``[1, 4+nc, N]`` (Ultralytics' export, "features-first") or ``[1, N, 4+nc]``
  ("features-last").
* YOLOv5 (anchor-based): three anchors per cell (N = 25200 at 640), each
  ``cx, cy, w, h, objectness`` then ``nc`` class scores, as ``[1, N, 5+nc]``; a
  candidate's score for a class is ``objectness * class score``.
* End-to-end (YOLOv10, YOLO26, and exports with ``nms=True``): the model has already
  picked its detections, ``[1, N, 6]`` with N the export's ``max_det`` (300), each
  ``x0, y0, x1, y1, score, class``; no NMS is run on them.

The head is told from the shape and the input size (:func:`yolo_family`): N equal to
the cells of the three grids is v8/v11, three times that is v5; six features per
candidate in ``[1, N, 6]`` with N neither is end-to-end (an Ultralytics export's own
``end2end`` flag, when the file carries it, decides instead). Another count is read as
v8 (heads with other strides, e.g. P2 or P6 variants).

The hot path stays in the tensor's integer domain: the best class score of every
candidate is the max over the int8 class rows, the confidence threshold is compared on
those integers, and only the few survivors are dequantized.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.common import BBox, Object, threshold_mask
from edge_agent.inference.tensors import QuantParams, dequantize

FEATURES_FIRST = "features-first"  # [1, 4+nc, N]
FEATURES_LAST = "features-last"  # [1, N, 4+nc]
LAYOUTS = ("auto", FEATURES_FIRST, FEATURES_LAST)
NORMALIZED = "normalized"  # box rows in 0..1 of the input
PIXELS = "pixels"  # box rows in input pixels
COORDS = ("auto", NORMALIZED, PIXELS)

# Normalized centres never exceed ~1 (quantization may overshoot a little); pixel
# centres of the anchor grid reach close to the input size (>= 32 px for any real model).
_PIXEL_CENTRE_MIN = 2.0


YOLOV8 = "yolov8"  # also YOLO11: the same anchor-free head
YOLOV5 = "yolov5"  # objectness column
YOLO_E2E = "yolo-end2end"  # detections already picked: x0, y0, x1, y1, score, class
FAMILIES = ("auto", YOLOV8, YOLOV5, YOLO_E2E)
E2E_FEATURES = 6
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL_V5 = 3


class YoloShape(NamedTuple):
    """What a YOLO output's shape says: its layout, class count and candidate count."""

    layout: str
    num_classes: int
    num_candidates: int


def grid_cells(input_size: tuple[int, int]) -> int:
    """Cells of the stride 8, 16 and 32 grids of an input ``(width, height)``."""
    w, h = input_size
    return sum(-(-w // s) * -(-h // s) for s in STRIDES)


def _candidates_axis(dims: list[int], input_size: tuple[int, int] | None) -> int | None:
    """Which of two axes holds the candidates, told by the input size: the one whose size
    is a candidate count of that input (a cell or three anchors per cell of the grids)
    while the other's is not. None when the sizes do not tell (the caller then takes the
    larger axis: candidates outnumber classes, except with many classes at a small
    input, e.g. Open Images' 601 at 160x160, 525 cells)."""
    if input_size is None:
        return None
    counts = (grid_cells(input_size), ANCHORS_PER_CELL_V5 * grid_cells(input_size))
    hits = [i for i, d in enumerate(dims) if d in counts]
    return hits[0] if len(hits) == 1 else None


def yolo_family(
    shape: tuple[int, ...], input_size: tuple[int, int] | None, end2end: bool | None = None
) -> str:
    """``yolov5`` when the output has three anchors per grid cell, ``yolo-end2end`` for
    ``[1, N, 6]`` detections, else ``yolov8``.

    Args:
        shape: the output's shape.
        input_size: ``(width, height)`` of the model input (None: unknown).
        end2end: the export's own ``end2end`` flag (None: the file does not say).
    """
    dims = [int(d) for d in shape if int(d) != 1] or [0]
    if len(dims) != 2:
        return YOLOV8
    axis = _candidates_axis(dims, input_size)
    candidates, features = (max(dims), min(dims)) if axis is None else (dims[axis], dims[1 - axis])
    cells = grid_cells(input_size) if input_size is not None else None
    if features == E2E_FEATURES and dims[1] == features:
        if end2end is not None:
            if end2end:
                return YOLO_E2E
        elif cells is not None and candidates not in (cells, ANCHORS_PER_CELL_V5 * cells):
            return YOLO_E2E
    if cells is not None and candidates == ANCHORS_PER_CELL_V5 * cells and features >= 6:
        return YOLOV5
    return YOLOV8


def yolo_shape(
    shape: tuple[int, ...],
    layout: str = "auto",
    family: str = YOLOV8,
    input_size: tuple[int, int] | None = None,
) -> YoloShape:
    """Interpret a YOLOv8 output shape.

    With ``layout="auto"`` the axis whose size is a candidate count of ``input_size``
    holds the candidates; when that does not tell, the smaller of the two non-batch axes
    is taken as ``4+nc`` (candidates outnumber classes: 8400 vs 84 for COCO at 640).

    Args:
        shape: the output's shape, ``[1, a, b]`` or ``[a, b]``.
        layout: "auto", "features-first" or "features-last".
        family: ``yolov8`` (4 box values per candidate), ``yolov5`` (4 + objectness)
            or ``yolo-end2end`` (4 box values, a score and a class; ``num_classes`` 0:
            the shape does not say).
        input_size: ``(width, height)`` of the model input (None: unknown).

    Returns:
        The resolved layout, number of classes and number of candidates.

    Raises:
        ModelError: the shape cannot be a YOLOv8 output (or is square with
            ``layout="auto"``).
        ValueError: unknown layout name.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"YOLO layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    dims = tuple(int(d) for d in shape)
    if len(dims) == 3 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) != 2:
        raise ModelError(f"YOLO output shape {list(shape)} is not [1, 4+nc, N] or [1, N, 4+nc]")
    a, b = dims
    axis = _candidates_axis([a, b], input_size) if layout == "auto" else None
    if axis is not None:
        layout = FEATURES_LAST if axis == 0 else FEATURES_FIRST
    elif layout == "auto":
        if a == b:
            raise ModelError(
                f"YOLO output shape {list(shape)} is square, so which axis holds the "
                "candidates cannot be told: export the model at another image size (in "
                f"code, pass layout={FEATURES_FIRST!r} for [1, 4+nc, N] or "
                f"{FEATURES_LAST!r} for [1, N, 4+nc])"
            )
        layout = FEATURES_FIRST if a < b else FEATURES_LAST
    features, candidates = (a, b) if layout == FEATURES_FIRST else (b, a)
    if family == YOLO_E2E:
        if features != E2E_FEATURES:
            raise ModelError(
                f"YOLO end-to-end output shape {list(shape)} as {layout} has {features} "
                f"values per detection; need {E2E_FEATURES} (x0, y0, x1, y1, score, class)"
            )
        return YoloShape(layout, 0, candidates)
    head = 5 if family == YOLOV5 else 4
    if features < head + 1 or candidates < 1:
        raise ModelError(
            f"YOLO output shape {list(shape)} as {layout} has {features} features per "
            f"candidate; need {head} box values and at least one class"
        )
    return YoloShape(layout, features - head, candidates)


def _features_first(
    output: np.ndarray, layout: str, family: str, input_size: tuple[int, int]
) -> np.ndarray:
    """A ``[4+nc, N]`` (``[5+nc, N]`` for v5) view of the output (no copy)."""
    info = yolo_shape(output.shape, layout, family, input_size)
    table = output.reshape(output.shape[-2:])
    return table if info.layout == FEATURES_FIRST else table.T


def _boxes_are_pixels(feats: np.ndarray, quant: QuantParams) -> bool:
    """True when the box rows are in pixels (see _PIXEL_CENTRE_MIN)."""
    # The max is taken on the raw values: dequantization is monotone.
    peak = dequantize(np.asarray(feats[:2].max()), quant)
    return bool(peak > _PIXEL_CENTRE_MIN)


def _nms(
    rects: np.ndarray, classes: np.ndarray, iou_threshold: float, agnostic: bool
) -> np.ndarray:
    """Positions kept by greedy NMS, for candidates already sorted best first.

    OpenCV processes boxes by descending score with a stable sort; handing it the rank
    as the score makes it follow our order exactly (score, then anchor index). NMS runs
    per class with plain NMSBoxes (rather than NMSBoxesBatched's coordinate offsets) so
    that the IoUs are computed on the real coordinates.
    """
    ranks = np.arange(len(rects), 0, -1, dtype=np.float32)
    groups = (
        [np.arange(len(rects))]
        if agnostic
        else [np.flatnonzero(classes == c) for c in np.unique(classes)]
    )
    kept = []
    for group in groups:
        picked = cv2.dnn.NMSBoxes(rects[group], ranks[group], 0.0, float(iou_threshold))
        kept.append(group[np.asarray(picked, dtype=np.int64).reshape(-1)])
    return np.sort(np.concatenate(kept))


def _v5_candidates(
    feats: np.ndarray, quant: QuantParams, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidate indices, scores, classes) of a YOLOv5 head whose best
    ``objectness * class score`` is ``>= threshold``.

    Class scores are at most 1, so only candidates whose objectness alone reaches the
    threshold can pass: that cut is made on the raw integers first.
    """
    idx = np.flatnonzero(threshold_mask(feats[4], quant, threshold))
    if idx.size == 0:
        return idx, np.empty(0, np.float32), np.empty(0, np.int64)
    objectness = dequantize(feats[4, idx], quant)
    products = dequantize(feats[5:, idx], quant) * objectness
    classes = products.argmax(axis=0)
    scores = products[classes, np.arange(idx.size)].astype(np.float32)
    keep = scores >= np.float32(threshold)
    return idx[keep], scores[keep], classes[keep]


def _decode_end2end(
    feats: np.ndarray,
    quant: QuantParams,
    threshold: float,
    max_detections: int,
    input_size: tuple[int, int],
    coords: str,
) -> list[Object]:
    """The detections of an end-to-end head (``[6, N]``: x0, y0, x1, y1, score, class)
    scoring ``>= threshold``; the unused rows (score 0, or no class) are left out."""
    scores_raw = feats[4]
    idx = np.flatnonzero(threshold_mask(scores_raw, quant, threshold))
    scores = dequantize(scores_raw[idx], quant).astype(np.float32)
    classes = np.rint(dequantize(feats[5, idx], quant)).astype(np.int64)
    real = (scores > 0) & (classes >= 0)
    idx, scores, classes = idx[real], scores[real], classes[real]
    order = np.lexsort((idx, -scores))
    if max_detections > 0:
        order = order[:max_detections]
    idx, scores, classes = idx[order], scores[order], classes[order]
    x0, y0, x1, y1 = dequantize(feats[:4, idx], quant).astype(np.float64)
    # Normalized corners never exceed ~1; pixel corners of a real box reach past 2.
    peak = dequantize(np.asarray(feats[2:4].max()), quant) if feats.shape[1] else 0.0
    pixels = coords == PIXELS or (coords == "auto" and peak > _PIXEL_CENTRE_MIN)
    sx, sy = (1.0, 1.0) if pixels else (float(input_size[0]), float(input_size[1]))
    return [
        Object(
            int(classes[i]),
            float(scores[i]),
            BBox(float(x0[i] * sx), float(y0[i] * sy), float(x1[i] * sx), float(y1[i] * sy)),
        )
        for i in range(len(idx))
    ]


def decode_yolo(
    output: np.ndarray,
    quant: QuantParams,
    threshold: float,
    iou_threshold: float,
    max_detections: int,
    input_size: tuple[int, int],
    *,
    layout: str = "auto",
    coords: str = "auto",
    agnostic: bool = False,
    max_candidates: int = 30000,
    family: str = "auto",
) -> list[Object]:
    """Decode a YOLOv8/YOLO11 or YOLOv5 output into objects in input-tensor pixels.

    Each candidate takes its best class; candidates whose best score is ``>= threshold``
    go through greedy NMS per class (a box is dropped when its IoU with a better box of
    the same class is ``> iou_threshold``), as Ultralytics does.

    Args:
        output: the raw output, ``[1, 4+nc, N]`` or ``[1, N, 4+nc]``, int8/uint8 with
            ``quant`` or float.
        quant: the output's quantization (``NOT_QUANTIZED`` for float outputs).
        threshold: minimum class score (inclusive).
        iou_threshold: NMS IoU threshold in ``[0, 1]`` (Ultralytics uses 0.45 or 0.7).
        max_detections: keep at most this many objects (<= 0: all).
        input_size: ``(width, height)`` of the model input in pixels.
        layout: "auto" (see :func:`yolo_shape`), "features-first" or "features-last".
        coords: "auto", "normalized" (box rows in ``0..1`` of the input) or "pixels".
            "auto" decides per call: pixels when the largest box centre exceeds 2.
        agnostic: one NMS across all classes instead of one per class.
        max_candidates: at most this many best-scoring candidates enter NMS (<= 0: all),
            bounding the cost of a very low threshold.
        family: "auto" (see :func:`yolo_family`), "yolov8", "yolov5" (scores are
            ``objectness * class score``) or "yolo-end2end" (the model's own
            detections: no NMS, ``iou_threshold`` and ``agnostic`` are not used).

    Returns:
        Objects sorted by score (highest first; ties by candidate index). Boxes are not
        clipped (:func:`edge_agent.inference.geometry.to_image` clips to the frame).

    Raises:
        ModelError: the output's shape is not a YOLOv8 output.
        ValueError: an argument is out of range (NaN threshold, IoU outside [0, 1],
            unknown layout/coords name).
    """
    if coords not in COORDS:
        raise ValueError(f"YOLO coords must be one of {', '.join(COORDS)}, got {coords!r}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if family not in FAMILIES:
        raise ValueError(f"YOLO family must be one of {', '.join(FAMILIES)}, got {family!r}")
    output = np.asarray(output)
    if family == "auto":
        family = yolo_family(output.shape, input_size)
    feats = _features_first(output, layout, family, input_size)
    if family == YOLO_E2E:
        return _decode_end2end(feats, quant, threshold, max_detections, input_size, coords)
    if family == YOLOV5:
        idx, scores, classes = _v5_candidates(feats, quant, threshold)
    else:
        best_raw = feats[4:].max(axis=0)
        idx = np.flatnonzero(threshold_mask(best_raw, quant, threshold))
        scores = dequantize(best_raw[idx], quant)
        classes = None
    if idx.size == 0:
        return []
    # Score descending, then candidate index (lexsort's last key is the primary one).
    order = np.lexsort((idx, -scores))
    if max_candidates > 0:
        order = order[:max_candidates]
    idx, scores = idx[order], scores[order]
    # Ties go to the first class, as argmax on dequantized scores would (monotone map).
    classes = feats[4:, idx].argmax(axis=0) if classes is None else classes[order]
    cx, cy, w, h = dequantize(feats[:4, idx], quant).astype(np.float64)
    if coords == PIXELS or (coords == "auto" and _boxes_are_pixels(feats, quant)):
        sx = sy = 1.0
    else:
        sx, sy = float(input_size[0]), float(input_size[1])
    x0, y0 = (cx - w / 2) * sx, (cy - h / 2) * sy
    rects = np.stack([x0, y0, w * sx, h * sy], axis=1)
    keep = _nms(rects, classes, iou_threshold, agnostic)
    if max_detections > 0:
        keep = keep[:max_detections]
    return [
        Object(
            int(classes[i]),
            float(scores[i]),
            BBox(
                float(rects[i, 0]),
                float(rects[i, 1]),
                float(rects[i, 0] + rects[i, 2]),
                float(rects[i, 1] + rects[i, 3]),
            ),
        )
        for i in keep
    ]
