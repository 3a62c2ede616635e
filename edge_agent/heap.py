"""The C heap of the daemon's processes gives freed blocks back (glibc's mmap threshold).

glibc serves a request above its mmap threshold (128 KiB) with a mapping of its own,
unmapped when freed. But freeing such a block raises the threshold to the block's size
(up to 32 MiB), so that later blocks below it come from the heap, where a freed block
stays resident while anything above it lives. At start the daemon reads whole model
files (yolov8n: 3.2 MB) and frees them; the frames, scratch images and buffers of
about a megabyte that it then allocates were heap blocks, and what start-up freed among
them stayed resident for good.

Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, which also turns the raising off)
keeps such blocks in mappings of their own. Measured on ``edge-agent run`` with yolov8n
on the demo clip, 22 s after start, 3 interleaved runs of the code before and after
(docs/BENCHMARKS.md), medians: the daemon's anonymous memory went from 46.3 MB to 40.8
(RSS 88.3 to 84.7), the worker's from 52.9 to 52.3. The frame path reuses its buffers,
so no mapping is made per frame: the daemon took 33 and 35 minor page faults over 15 s
of the clip, without and with it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's default, kept fixed
ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc's own setting: a user's choice wins


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Keep blocks above ``threshold`` bytes in mappings of their own, for good.

    Nothing is done where the C library is not glibc, or where ``MALLOC_MMAP_THRESHOLD_``
    is set in the environment (glibc then already follows it). Otherwise it is set there
    too, so that the processes started from here (the inference worker's forkserver)
    follow it from their first allocation.

    Returns:
        True when the threshold was set.
    """
    if ENV in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        logger.debug("malloc: mmap threshold %d refused", threshold)
        return False
    # The processes started from here (the worker's forkserver) follow it from their start.
    os.environ[ENV] = str(threshold)
    return True
