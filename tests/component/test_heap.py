"""The daemon's C heap gives freed blocks back (edge_agent/heap.py), in a real process."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import pytest

from edge_agent.heap import ENV, MMAP_THRESHOLD

if not hasattr(ctypes.CDLL(None), "mallopt") or not sys.platform.startswith("linux"):
    pytest.skip("the C library is not glibc", allow_module_level=True)

# A start-up that frees a model-sized block, then megabyte blocks (frames, scratch
# images) of which all but the last are freed: what do they give back?
CHILD = """
import ctypes, json, os, sys
from edge_agent.heap import fix_mmap_threshold
fixed = fix_mmap_threshold() if sys.argv[1] == "fix" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def anon_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon:")) / 1024
model = libc.malloc(8 << 20)
ctypes.memset(model, 1, 8 << 20)
libc.free(model)
blocks = [libc.malloc(1 << 20) for _ in range(40)]
for block in blocks:
    ctypes.memset(block, 1, 1 << 20)
before = anon_mb()
for block in blocks[:-1]:
    libc.free(block)
returned = before - anon_mb()
print(json.dumps({"fixed": fixed, "returned_mb": returned, "env": os.environ.get(sys.argv[2])}))
"""


def run_child(mode: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k != ENV}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, ENV],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_freed_megabyte_blocks_leave_the_process_after_a_big_block_was_freed():
    got = run_child("fix")
    assert got["fixed"] is True
    assert got["returned_mb"] > 30, got  # 39 MB freed
    # The forkserver the daemon starts next inherits it from its first allocation.
    assert got["env"] == str(MMAP_THRESHOLD)


def test_a_threshold_the_user_set_is_left_to_glibc():
    got = run_child("fix", **{ENV: "65536"})
    assert got["fixed"] is False and got["env"] == "65536"
    assert got["returned_mb"] > 30, got  # glibc follows the user's setting itself
