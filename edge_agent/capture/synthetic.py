"""A deterministic moving test pattern behind the ``cv2.VideoCapture`` interface.

``synthetic:WxH@fps`` sources need no camera: benchmarks, the demo and tests use them.
Frame ``n`` is a pure function of ``(n, width, height)``: a scrolling colour ramp, a
white square bouncing across it, the frame number printed in the corner, and the frame
number as a 32-bit code strip along the top edge. The code survives JPEG (MJPG video
files), so :func:`decode_index` tells which frame an image is: tests use it to prove a
buffer still holds the frame its metadata claims.
"""

from __future__ import annotations

import cv2
import numpy as np

CODE_BITS = 32
BACKEND_NAME = "SYNTHETIC"


def code_cell(width: int) -> tuple[int, int]:
    """(cell width, strip height) of the frame-number code for an image width."""
    cell = max(1, width // CODE_BITS)
    # At least 8 rows so the strip covers whole JPEG blocks vertically.
    return cell, max(cell, 8)


def encode_index(image: np.ndarray, index: int) -> None:
    """Write ``index`` (mod 2**32) as black/white cells along the top edge, in place.

    Args:
        image: a BGR uint8 image at least 32 pixels wide and 8 high.
        index: the frame number; the most significant bit is the leftmost cell.
    """
    cell, rows = code_cell(image.shape[1])
    value = index & 0xFFFFFFFF
    for bit in range(CODE_BITS):
        on = (value >> (CODE_BITS - 1 - bit)) & 1
        image[:rows, bit * cell : (bit + 1) * cell] = 255 if on else 0


def decode_index(image: np.ndarray) -> int:
    """Read back the frame number :func:`encode_index` wrote (tolerates JPEG noise).

    Args:
        image: a BGR uint8 image made by :func:`render_pattern`, possibly re-encoded.

    Returns:
        The frame number modulo 2**32.
    """
    cell, rows = code_cell(image.shape[1])
    # Sample the middle of each cell: block edges are where JPEG rings.
    y0, y1 = rows // 4, max(rows // 4 + 1, rows - rows // 4)
    value = 0
    for bit in range(CODE_BITS):
        x0 = bit * cell + cell // 4
        x1 = max(x0 + 1, (bit + 1) * cell - cell // 4)
        value = (value << 1) | int(image[y0:y1, x0:x1].mean() > 127)
    return value


def _triangle(t: int, span: int) -> int:
    """0..span..0 sawtooth folded back: a bounce without floating point."""
    if span <= 0:
        return 0
    t %= 2 * span
    return t if t <= span else 2 * span - t


class PatternRenderer:
    """Renders frames of the test pattern for one size, reusing its background.

    Args:
        width, height: frame size in pixels (at least 32x32).
    """

    def __init__(self, width: int, height: int):
        if width < 32 or height < 32:
            raise ValueError(f"pattern needs at least 32x32 pixels, got {width}x{height}")
        self.width = width
        self.height = height
        # Background twice as wide as the frame, with a hue period of one frame width,
        # so any window of it is seamless and scrolling is one slice copy.
        hue = (np.arange(2 * width) * 180 // width % 180).astype(np.uint8)
        value = np.linspace(90, 255, height).astype(np.uint8)
        hsv = np.empty((height, 2 * width, 3), np.uint8)
        hsv[..., 0] = hue[None, :]
        hsv[..., 1] = 200
        hsv[..., 2] = value[:, None]
        self._background = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        self._step = max(2, width // 160)
        self._side = max(8, min(width, height) // 6)
        self._font_scale = max(0.35, height / 480 * 1.2)
        self._thickness = max(1, round(height / 240))

    def render(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Draw frame ``index``.

        Args:
            index: the frame number (>= 0).
            out: a (height, width, 3) uint8 array to draw into; a new one otherwise.

        Returns:
            The frame (``out`` itself when it fits).
        """
        w, h = self.width, self.height
        if out is None or out.shape != (h, w, 3) or out.dtype != np.uint8:
            out = np.empty((h, w, 3), np.uint8)
        offset = index * self._step % w
        np.copyto(out, self._background[:, offset : offset + w])
        side = self._side
        x = _triangle(index * 3, w - side)
        y = _triangle(index * 2, h - side)
        cv2.rectangle(out, (x, y), (x + side - 1, y + side - 1), (255, 255, 255), -1)
        label = f"{index:06d}"
        org = (4, h - 6)
        cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, self._font_scale,
                    (0, 0, 0), self._thickness + 2, cv2.LINE_AA)  # fmt: skip
        cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, self._font_scale,
                    (255, 255, 255), self._thickness, cv2.LINE_AA)  # fmt: skip
        encode_index(out, index)
        return out


def render_pattern(index: int, width: int, height: int) -> np.ndarray:
    """One frame of the pattern (convenience; a :class:`PatternRenderer` is faster in loops).

    Args:
        index: the frame number.
        width, height: frame size.

    Returns:
        A new BGR uint8 image.
    """
    return PatternRenderer(width, height).render(index)


class SyntheticCapture:
    """A never-ending ``cv2.VideoCapture`` look-alike serving the test pattern.

    It renders as fast as it is read; the camera thread paces it at ``fps``.

    Args:
        width, height: frame size.
        fps: the nominal rate reported through ``CAP_PROP_FPS``.
    """

    def __init__(self, width: int, height: int, fps: float = 30.0):
        self._renderer = PatternRenderer(width, height)
        self._fps = float(fps)
        self._index = 0
        self._open = True

    def isOpened(self) -> bool:
        """Whether :meth:`release` has not been called yet."""
        return self._open

    def read(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
        """Render the next frame, into ``image`` when it has the right shape.

        Returns:
            ``(True, frame)``, or ``(False, None)`` after :meth:`release`.
        """
        if not self._open:
            return False, None
        frame = self._renderer.render(self._index, image)
        self._index += 1
        return True, frame

    def get(self, prop: int) -> float:
        """Frame size, fps and position; 0.0 for anything else (like OpenCV)."""
        values = {
            cv2.CAP_PROP_FRAME_WIDTH: float(self._renderer.width),
            cv2.CAP_PROP_FRAME_HEIGHT: float(self._renderer.height),
            cv2.CAP_PROP_FPS: self._fps,
            cv2.CAP_PROP_POS_FRAMES: float(self._index),
        }
        return values.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        """Only the position can be set (to replay a frame number)."""
        if prop == cv2.CAP_PROP_POS_FRAMES and value >= 0:
            self._index = int(value)
            return True
        return False

    def release(self) -> None:
        """Close the source; further reads fail."""
        self._open = False

    def getBackendName(self) -> str:
        """The pseudo backend name."""
        return BACKEND_NAME
