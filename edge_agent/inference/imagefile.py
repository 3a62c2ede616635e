"""Reading still images for ``edge-agent infer``, with damage reported, not hidden.

OpenCV decodes a truncated JPEG without failing: libjpeg prints "Premature end of JPEG
file" on stderr, fills the missing rows with grey and the model scores a half-grey
picture. Here libjpeg's messages are captured and returned as warnings, and a JPEG
without its end-of-image marker is flagged even when the decoder says nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NamedTuple

import cv2
import numpy as np  # noqa: F401 - the ImageFile annotation

from edge_agent.inference.runtime import capture_stderr

_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"


class ImageFile(NamedTuple):
    """A decoded image (BGR uint8, None when unreadable) and what was wrong with it."""

    image: np.ndarray | None
    warnings: tuple[str, ...]
    error: str = ""


@contextlib.contextmanager
def opencv_name(path: str) -> Iterator[str]:
    """A name under which OpenCV can open ``path`` while the block runs.

    A file name that is not UTF-8 (Latin-1 ``caf\xe9.jpg``) reaches Python with lone
    surrogates, and OpenCV's binding crashes on such a string (SIGSEGV). Such a file is
    opened here and given to OpenCV as ``/proc/self/fd/N``; other names go as they are.

    Raises:
        OSError: the file cannot be opened.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        fd = os.open(path, os.O_RDONLY)
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    yield path


def jpeg_truncated(data: bytes) -> bool:
    """True for JPEG data (its first bytes and its last 64) without an end-of-image marker
    near the end.

    ``FF D9`` cannot occur inside entropy-coded data (a data ``FF`` is followed by ``00``),
    so finding it anywhere in the last 64 bytes tolerates short trailers some cameras
    append after the marker.
    """
    return data.startswith(_JPEG_START) and _JPEG_END not in data[-64:]


def read_image(path: str) -> ImageFile:
    """Read and decode an image file as OpenCV's BGR.

    Returns:
        The ImageFile; ``error`` says why ``image`` is None (also when OpenCV raises).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError as exc:
        return ImageFile(None, (), f"cannot read image: {exc.strerror or exc}")
    if size == 0:
        return ImageFile(None, (), "cannot read image: the file is empty")
    # imread, not imdecode: imdecode refuses a truncated JPEG that imread decodes.
    try:
        with opencv_name(path) as name, capture_stderr() as lines:
            image = cv2.imread(name, cv2.IMREAD_COLOR)
    except OSError as exc:
        return ImageFile(None, (), f"cannot read image: {exc.strerror or exc}")
    except cv2.error as exc:
        # Some decoders raise rather than return None: a header claiming more pixels than
        # OpenCV's limit (CV_IO_MAX_IMAGE_PIXELS), an OpenEXR file with that codec off.
        return ImageFile(None, (), f"cannot read image: OpenCV refuses it ({exc.err})")
    if image is None:
        return ImageFile(None, (), "cannot read image: not a format OpenCV decodes")
    warnings = [line.decode("utf-8", "replace").strip() for line in lines]
    warnings = [w for w in warnings if w]
    if jpeg_truncated(head + tail):
        warnings.append(
            f"truncated JPEG ({os.path.basename(path)} has no end-of-image marker): "
            "the missing rows were filled in, so the results describe a damaged picture"
        )
    return ImageFile(image, tuple(warnings))
