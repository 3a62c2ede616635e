"""How a camera frame is fitted into the model input, and how to undo it exactly.

Two fits are supported:

* ``stretch``: the frame is resized to the input size; the scale differs per axis.
* ``letterbox``: the frame keeps its aspect ratio, is scaled by
  ``min(dst_w / src_w, dst_h / src_h)`` to a rounded size and centred on a padded canvas,
  exactly as Ultralytics' ``LetterBox`` does (left/top pad ``round(pad - 0.1)``). The
  pad colour (114) is the preprocessor's business.

Coordinates are continuous: pixel column ``i`` spans ``[i, i + 1)``. Resizing ``src_w``
columns to ``new_w`` maps edge ``x`` to ``x * new_w / src_w`` (that is how cv2.resize
samples), so :func:`to_image` divides by exactly that ratio. Ultralytics divides by the
unrounded gain instead, which differs by at most half a source pixel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from edge_agent.inference.adapters.common import BBox, Object

STRETCH = "stretch"
LETTERBOX = "letterbox"
FIT_MODES = (STRETCH, LETTERBOX)


class Fit(NamedTuple):
    """A frame of ``src_w x src_h`` resized to ``new_w x new_h`` at ``(pad_x, pad_y)``
    inside an input of ``dst_w x dst_h``; ``scale_x = new_w / src_w`` and
    ``scale_y = new_h / src_h``."""

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    new_w: int
    new_h: int


def plan_fit(src_w: int, src_h: int, dst_w: int, dst_h: int, mode: str) -> Fit:
    """Plan how a frame is fitted into the model input.

    Args:
        src_w, src_h: frame size in pixels.
        dst_w, dst_h: model input size in pixels.
        mode: "stretch" or "letterbox".

    Returns:
        The Fit (resized size, offsets and exact per-axis scale).

    Raises:
        ValueError: a size is not a positive integer or the mode is unknown.
    """
    for name, value in (("src_w", src_w), ("src_h", src_h), ("dst_w", dst_w), ("dst_h", dst_h)):
        if int(value) != value or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    src_w, src_h, dst_w, dst_h = int(src_w), int(src_h), int(dst_w), int(dst_h)
    if mode == STRETCH:
        new_w, new_h, pad_x, pad_y = dst_w, dst_h, 0, 0
    elif mode == LETTERBOX:
        gain = min(dst_w / src_w, dst_h / src_h)
        # Python's round() (half to even) as Ultralytics uses; never below one pixel.
        new_w = min(max(1, round(src_w * gain)), dst_w)
        new_h = min(max(1, round(src_h * gain)), dst_h)
        pad_x = round((dst_w - new_w) / 2 - 0.1)
        pad_y = round((dst_h - new_h) / 2 - 0.1)
    else:
        raise ValueError(f"fit mode must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    return Fit(src_w, src_h, dst_w, dst_h, new_w / src_w, new_h / src_h, pad_x, pad_y, new_w, new_h)


def to_image(bbox: BBox, fit: Fit) -> BBox:
    """Map a box from input-tensor pixels back to frame pixels, clipped to the frame.

    Args:
        bbox: box in model-input pixel coordinates.
        fit: the Fit the frame was prepared with.

    Returns:
        The box in frame pixel coordinates, clipped to ``[0, src_w] x [0, src_h]``
        (a box entirely in the padding collapses to zero width or height).
    """
    return BBox(
        (bbox.xmin - fit.pad_x) / fit.scale_x,
        (bbox.ymin - fit.pad_y) / fit.scale_y,
        (bbox.xmax - fit.pad_x) / fit.scale_x,
        (bbox.ymax - fit.pad_y) / fit.scale_y,
    ).clip(fit.src_w, fit.src_h)


def objects_to_image(objects: Iterable[Object], fit: Fit) -> list[Object]:
    """Map detections from input-tensor pixels to frame pixels.

    Args:
        objects: detections as the adapters return them.
        fit: the Fit the frame was prepared with.

    Returns:
        The detections with frame-pixel boxes, in the same order; detections whose
        box lies entirely in the letterbox padding (zero area once clipped) are dropped.
    """
    mapped = (obj._replace(bbox=to_image(obj.bbox, fit)) for obj in objects)
    return [obj for obj in mapped if obj.bbox.valid]
