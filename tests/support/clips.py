"""Write small test video files with cv2.VideoWriter.

This OpenCV build (4.11 pip wheel, FFmpeg backend) writes and reads back, frame-exact:
MJPG/.avi, XVID/.avi, FFV1/.avi (lossless), mp4v/.mp4 and MJPG/.mkv; it cannot write
avc1/H264 (no encoder in the wheel). MJPG in .avi is the default here: every frame is
a keyframe, the frame count and rate are in the header, and rewinding is exact.

Every frame carries its index as the synthetic pattern's code strip
(:func:`edge_agent.capture.synthetic.decode_index` reads it back through JPEG), so a
test can tell exactly which frame of the file it received.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from edge_agent.capture.synthetic import PatternRenderer, encode_index

# (fourcc, extension) pairs this OpenCV can write and read back.
WRITABLE_FORMATS = (("MJPG", ".avi"), ("XVID", ".avi"), ("FFV1", ".avi"), ("mp4v", ".mp4"))


def _writer(path: Path, fourcc: str, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """An opened VideoWriter, or an AssertionError naming what this build cannot do."""
    writer = cv2.VideoWriter(
        str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height)
    )
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc} into {path.suffix}"
    return writer


def write_clip(
    path: Path | str,
    frames: int,
    *,
    width: int = 320,
    height: int = 240,
    fps: float = 30.0,
    fourcc: str = "MJPG",
    start: int = 0,
) -> Path:
    """Write ``frames`` frames of the synthetic pattern, frame ``i`` showing ``start + i``.

    Args:
        path: the file to create (its extension picks the container).
        frames: number of frames.
        width, height: frame size (at least 32x32).
        fps: the rate written into the header.
        fourcc: codec four-character code.
        start: index of the first frame.

    Returns:
        The path.
    """
    path = Path(path)
    renderer = PatternRenderer(width, height)
    writer = _writer(path, fourcc, fps, width, height)
    buffer = np.empty((height, width, 3), np.uint8)
    try:
        for i in range(frames):
            writer.write(renderer.render(start + i, buffer))
    finally:
        writer.release()
    return path


def write_photo_clip(
    path: Path | str,
    photo: Path | str,
    frames: int,
    *,
    size: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    fourcc: str = "MJPG",
) -> Path:
    """Write a clip panning slowly across a photo (real content for detectors).

    The photo is scaled to cover ``size`` plus a margin, and a ``size`` window slides
    across it; each frame's index is in its code strip.

    Args:
        path: the file to create.
        photo: an image file OpenCV can read (e.g. ``shared_file("images/pets.jpg")``).
        frames: number of frames.
        size: (width, height) of the clip.
        fps: header rate.
        fourcc: codec four-character code.

    Returns:
        The path.
    """
    path = Path(path)
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {photo}"
    width, height = size
    margin = max(8, width // 10)
    scale = max((width + margin) / image.shape[1], (height + margin) / image.shape[0])
    big = cv2.resize(
        image,
        (round(image.shape[1] * scale), round(image.shape[0] * scale)),
        interpolation=cv2.INTER_AREA,
    )
    span_x, span_y = big.shape[1] - width, big.shape[0] - height
    writer = _writer(path, fourcc, fps, width, height)
    frame = np.empty((height, width, 3), np.uint8)
    try:
        for i in range(frames):
            x = span_x * i // max(1, frames - 1)
            y = span_y * i // max(1, frames - 1)
            np.copyto(frame, big[y : y + height, x : x + width])
            encode_index(frame, i)
            writer.write(frame)
    finally:
        writer.release()
    return path


def frame_count(path: Path | str) -> int:
    """Decode a file to its end and count the frames (headers can lie; decoding cannot)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    assert cap.isOpened(), f"cannot open {path}"
    count = 0
    try:
        while cap.grab():
            count += 1
    finally:
        cap.release()
    return count


def write_mjpg_packets(path: Path | str, packets: list[bytes], width: int, height: int) -> Path:
    """An MJPG AVI whose frames are ``packets`` as they are (OpenCV's writer encodes each
    frame itself: it cannot write two JPEG fields a frame, or frames cut short); 30 fps,
    ``width`` x ``height`` in the headers."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return tag + struct.pack("<I", len(data)) + data + b"\0" * (len(data) % 2)

    def riff_list(kind: bytes, body: bytes) -> bytes:
        return b"LIST" + struct.pack("<I", len(body) + 4) + kind + body

    n, biggest = len(packets), max(len(p) for p in packets)
    avih = struct.pack(
        "<14I", 33333, biggest * 30, 0, 0x10, n, 0, 1, biggest, width, height, 0, 0, 0, 0
    )
    rate = (0, 0, 0, 0, 1, 30, 0, n, biggest, 0xFFFFFFFF, 0)  # flags..scale, rate..quality
    strh = struct.pack("<4s4sIHHIIIIIIIIhhhh", b"vids", b"MJPG", *rate, 0, 0, width, height)
    strf = struct.pack(
        "<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0
    )
    strl = riff_list(b"strl", chunk(b"strh", strh) + chunk(b"strf", strf))
    header = riff_list(b"hdrl", chunk(b"avih", avih) + strl)
    movi, index, offset = b"", b"", 4
    for packet in packets:
        data = chunk(b"00dc", bytes(packet))
        index += struct.pack("<4sIII", b"00dc", 0x10, offset, len(packet))
        movi, offset = movi + data, offset + len(data)
    body = b"AVI " + header + riff_list(b"movi", movi) + chunk(b"idx1", index)
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return Path(path)
