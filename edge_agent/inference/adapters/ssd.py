"""SSD models ending in TFLite_Detection_PostProcess -> objects.

The op has four float32 outputs: boxes ``[1, N, 4]`` (ymin, xmin, ymax, xmax, normalized
to the input), classes ``[1, N]``, scores ``[1, N]`` and the valid count ``[1]``. Exporters
list them in different orders:

* TF1 (``export_tflite_ssd_graph.py``): boxes, classes, scores, count, named
  ``TFLite_Detection_PostProcess``, ``...:1``, ``...:2``, ``...:3``.
* TF2 (``export_tflite_graph_tf2.py``, Model Maker): scores, boxes, count, classes, named
  ``StatefulPartitionedCall:1``, ``:3``, ``:0``, ``:2``.

Boxes and count are told apart by shape. Classes and scores have the same shape, so they
are told apart by name when the names follow one of the conventions above (the
boxes/count names must confirm the convention), and otherwise guessed from the order and
confirmed from the values by :func:`resolve_ssd_order` (class ids are integers, scores
lie in ``[0, 1]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from edge_agent.errors import ModelError
from edge_agent.inference.adapters.common import BBox, Object
from edge_agent.inference.tensors import TensorSpec

# "<prefix>[:k]"; a name is any string, line breaks included.
_SUFFIX = re.compile(r"(.*?)(?::(\d+))?\Z", re.DOTALL)


class SsdLayout(NamedTuple):
    """Positions of the four SSD outputs in the model's output list.

    ``certain`` is False while classes and scores are only guessed from the output
    order; :func:`resolve_ssd_order` settles it from the values of a real frame.
    """

    boxes: int
    classes: int
    scores: int
    count: int
    certain: bool


def _shapes_text(shapes: Sequence[tuple[int, ...]]) -> str:
    """Shapes as ``[1, 10, 4], [1, 10]`` for error messages."""
    return ", ".join(str(list(shape)) for shape in shapes)


def is_ssd_signature(shapes: Sequence[tuple[int, ...]]) -> bool:
    """True when four output shapes are those of TFLite_Detection_PostProcess."""
    try:
        _by_shape(shapes)
    except ModelError:
        return False
    return True


def _by_shape(shapes: Sequence[tuple[int, ...]]) -> tuple[int, int, tuple[int, int]]:
    """(boxes, count, (first [1,N], second [1,N])) positions, or ModelError."""
    shapes = [tuple(int(d) for d in shape) for shape in shapes]
    boxes = [i for i, s in enumerate(shapes) if len(s) == 3 and s[0] == 1 and s[2] == 4]
    count = [i for i, s in enumerate(shapes) if s in ((1,), ())]
    vectors = [i for i, s in enumerate(shapes) if len(s) == 2 and s[0] == 1]
    ok = len(shapes) == 4 and len(boxes) == 1 and len(count) == 1 and len(vectors) == 2
    if ok:
        n = shapes[boxes[0]][1]
        ok = all(shapes[i][1] == n for i in vectors)
    if not ok:
        raise ModelError(
            "outputs are not those of an SSD with TFLite_Detection_PostProcess "
            "(expected boxes [1, N, 4], classes [1, N], scores [1, N], count [1]; "
            f"got {_shapes_text(shapes)})"
        )
    return boxes[0], count[0], (vectors[0], vectors[1])


def _by_name(
    names: Sequence[str], boxes: int, count: int, pair: tuple[int, int]
) -> tuple[int, int] | None:
    """(classes, scores) from the names, or None when the names do not settle it."""
    lowered = [name.lower() for name in names]
    a, b = pair
    # Signature-style names ("detection_classes", "detection_scores").
    if "class" in lowered[a] and "score" in lowered[b]:
        return a, b
    if "score" in lowered[a] and "class" in lowered[b]:
        return b, a
    # "<op>[:k]" names: k is the op's output index (TF1) or 3 minus it (TF2). Trust the
    # suffixes only when all four share one prefix and boxes/count confirm which.
    parsed = [_SUFFIX.match(name).groups() for name in names]
    prefixes = {prefix for prefix, _ in parsed}
    if len(prefixes) != 1:
        return None
    index = {i: int(k) if k is not None else 0 for i, (_, k) in enumerate(parsed)}
    if (index[boxes], index[count]) == (0, 3):
        classes_k, scores_k = 1, 2
    elif (index[boxes], index[count]) == (3, 0):
        classes_k, scores_k = 2, 1
    else:
        return None
    if (index[a], index[b]) == (classes_k, scores_k):
        return a, b
    if (index[a], index[b]) == (scores_k, classes_k):
        return b, a
    return None


def _layout(shapes: Sequence[tuple[int, ...]], names: Sequence[str] | None) -> SsdLayout:
    """Layout from shapes and (optionally) names; see ssd_layout()."""
    boxes, count, pair = _by_shape(shapes)
    decided = _by_name(names, boxes, count, pair) if names is not None else None
    if decided is not None:
        return SsdLayout(boxes, decided[0], decided[1], count, True)
    a, b = pair
    # Guess from the known export orders: TF2 lists scores first and classes last,
    # TF1 lists classes before scores. Anything else: classes first, unconfirmed.
    if (a, boxes, count, b) == (0, 1, 2, 3):
        return SsdLayout(boxes, b, a, count, False)
    return SsdLayout(boxes, a, b, count, False)


def ssd_layout(outputs: Sequence[TensorSpec]) -> SsdLayout:
    """Find which output of a TFLite_Detection_PostProcess model is which.

    Args:
        outputs: the model's output tensors, in the interpreter's order.

    Returns:
        The positions of boxes, classes, scores and count in ``outputs``; ``certain``
        tells whether classes/scores were identified from the names (True) or only
        guessed from the order (False: confirm with :func:`resolve_ssd_order`).

    Raises:
        ModelError: the shapes are not those of the post-processing op.
    """
    return _layout([spec.shape for spec in outputs], [spec.name for spec in outputs])


def _kind(values: np.ndarray) -> str | None:
    """'classes', 'scores' or None (undecidable) for the valid entries of one vector."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    if np.any(values != np.round(values)):
        return "scores"  # class ids are whole numbers
    if np.any(values > 1) or np.any(values < 0):
        return "classes"  # scores are probabilities
    return None  # all 0/1: either could be


def resolve_ssd_order(tensors: Sequence[np.ndarray], layout: SsdLayout | None = None) -> SsdLayout:
    """Confirm (or correct) which of the two ``[1, N]`` outputs holds the classes.

    Decides from the values of one inference: a vector with a fractional value holds
    scores, a vector with a value above 1 holds class ids. Frames where this cannot be
    decided (no detections, or every valid class id 0 or 1 and every score exactly 0
    or 1) return the layout unchanged, still uncertain; call again on a later frame.

    Args:
        tensors: the four output arrays, in the model's output order.
        layout: the layout from :func:`ssd_layout`; None derives it from the shapes.

    Returns:
        The layout, with ``certain=True`` when it was decided (by name or by value).

    Raises:
        ModelError: the arrays do not have the post-processing op's shapes.
    """
    if layout is None:
        layout = _layout([np.shape(t) for t in tensors], None)
    if layout.certain:
        return layout
    n = _valid_count(tensors[layout.count], np.shape(tensors[layout.classes])[-1])
    first = np.asarray(tensors[layout.classes], dtype=np.float64).reshape(-1)[:n]
    second = np.asarray(tensors[layout.scores], dtype=np.float64).reshape(-1)[:n]
    kinds = (_kind(first), _kind(second))
    if kinds in (("classes", "scores"), ("classes", None), (None, "scores")):
        return layout._replace(certain=True)
    if kinds in (("scores", "classes"), ("scores", None), (None, "classes")):
        return layout._replace(classes=layout.scores, scores=layout.classes, certain=True)
    return layout


def split_ssd(
    tensors: Sequence[np.ndarray], layout: SsdLayout
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The outputs reordered as ``(boxes, classes, scores, count)`` for :func:`decode_ssd`."""
    return (
        tensors[layout.boxes],
        tensors[layout.classes],
        tensors[layout.scores],
        tensors[layout.count],
    )


def _valid_count(count: np.ndarray, n: int) -> int:
    """The op's detection count as an int clamped to ``[0, n]``."""
    values = np.asarray(count, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values[0]):
        return 0
    return int(min(max(round(float(values[0])), 0), n))


def decode_ssd(
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    count: np.ndarray,
    threshold: float,
    input_size: tuple[int, int],
) -> list[Object]:
    """Turn the post-processing op's outputs into objects in input-tensor pixels.

    Args:
        boxes: ``[1, N, 4]`` (or ``[N, 4]``) ymin, xmin, ymax, xmax in ``0..1``.
        classes: ``[1, N]`` class ids (floats holding integers).
        scores: ``[1, N]`` scores.
        count: ``[1]`` number of valid entries (the rest is padding).
        threshold: minimum score (inclusive, compared in float32).
        input_size: ``(width, height)`` of the model input in pixels.

    Returns:
        Objects with boxes clipped to the input and scaled to its pixels, sorted by
        score (highest first), ties in the op's order.

    Raises:
        ModelError: the arrays' sizes do not fit together.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if not len(boxes) == len(classes) == len(scores):
        raise ModelError(
            f"SSD outputs disagree: {len(boxes)} boxes, {len(classes)} classes, "
            f"{len(scores)} scores"
        )
    n = _valid_count(count, len(scores))
    keep = np.flatnonzero(scores[:n] >= np.float32(threshold))
    if keep.size == 0:
        return []
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    width, height = float(input_size[0]), float(input_size[1])
    coords = np.clip(boxes[keep].astype(np.float64), 0.0, 1.0)
    objects = []
    for i, (ymin, xmin, ymax, xmax) in zip(keep, coords):
        bbox = BBox(xmin * width, ymin * height, xmax * width, ymax * height)
        objects.append(Object(int(round(float(classes[i]))), float(scores[i]), bbox))
    return objects
