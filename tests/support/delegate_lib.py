"""Build the test delegate library (tests/support/delegate/*.c) with the C compiler.

The library stands where libedgetpu would: tests point ``model.edgetpu_library`` at it
and the runtime's real ``load_delegate`` loads it (see the C file for its modes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent / "delegate" / "edgetpu_test_delegate.c"
LOG_ENV = "EDGE_AGENT_TEST_DELEGATE_LOG"
MODES = ("ok", "fail", "abort", "hang")


def build_delegate(directory: Path, mode: str = "ok") -> Path:
    """Compile the delegate with ``mode`` as its default; skip the test without ``cc``."""
    assert mode in MODES, mode
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        pytest.skip("no C compiler (cc) to build the test delegate library")
    library = directory / f"libedgetpu-test-{mode}.so"
    cmd = [compiler, "-shared", "-fPIC", "-O1", "-Wall", f'-DDEFAULT_MODE="{mode}"']
    proc = subprocess.run(
        [*cmd, "-o", str(library), str(SOURCE)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return library


def delegate_log(path: Path) -> list[str]:
    """The calls the delegate logged, one per line (none when it never ran)."""
    return path.read_text().splitlines() if path.exists() else []
