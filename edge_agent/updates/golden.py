"""Golden input/output health check of a release.

A release may carry ``golden_input`` (a ``.npy`` array: the model's input tensor,
exact shape and dtype) and ``golden_output`` (a ``.npz`` with arrays ``"0"``, ``"1"``...
in output order, or a ``.npy`` for a single output: the raw output tensors the model
produced for that input). The daemon's validator runs the staged model on the golden
input and calls :func:`check_golden`; any element further than the manifest's
``golden_tolerance`` (raw tensor units, default 1) from the expected value fails the
update with ``health_check_failed``. ``pack`` can create the pair with
:func:`make_golden` from the CPU build of the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.manifest import Manifest

DEFAULT_TOLERANCE = 1.0


class Golden(NamedTuple):
    """The health-check tensors of a release."""

    input: np.ndarray
    outputs: list[np.ndarray]
    tolerance: float


def _load(path: Path) -> list[np.ndarray]:
    """Arrays of a .npy or .npz file, never unpickling anything."""
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            keys = sorted(data.files, key=lambda k: int(k) if k.isdigit() else 1 << 30)
            return [data[k] for k in keys]
    return [data]


def load_golden(release_dir: str | os.PathLike[str], manifest: Manifest) -> Golden | None:
    """Read a release's golden tensors.

    Returns:
        The Golden, or None when the release has none.

    Raises:
        ModelUpdateError: ``bad_golden`` when the files are not numpy arrays.
    """
    gin, gout = manifest.file("golden_input"), manifest.file("golden_output")
    if gin is None or gout is None:
        return None
    root = Path(release_dir)
    try:
        (inp,) = _load(root / gin.name)[:1]
        outputs = _load(root / gout.name)
    except (OSError, ValueError, EOFError) as exc:
        raise ModelUpdateError(
            "bad_golden", f"{manifest.label}: unreadable golden files: {exc}"
        ) from exc
    tolerance = manifest.golden_tolerance
    return Golden(inp, outputs, DEFAULT_TOLERANCE if tolerance is None else float(tolerance))


def check_golden(actual: Sequence[np.ndarray], golden: Golden, *, label: str = "model") -> float:
    """Compare a run on the golden input with the expected outputs.

    Args:
        actual: the model's raw output tensors, in output order.
        golden: from :func:`load_golden`.
        label: the model, for the message.

    Returns:
        The largest absolute difference seen.

    Raises:
        ModelUpdateError: ``health_check_failed`` on a count, shape or value mismatch.
    """
    if len(actual) != len(golden.outputs):
        raise ModelUpdateError(
            "health_check_failed",
            f"{label}: {len(actual)} outputs, golden has {len(golden.outputs)}",
        )
    worst = 0.0
    for i, (got, want) in enumerate(zip(actual, golden.outputs)):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            raise ModelUpdateError(
                "health_check_failed", f"{label}: output {i} shape {got.shape}, golden {want.shape}"
            )
        diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), initial=0))
        if not diff <= golden.tolerance:  # also catches NaN
            raise ModelUpdateError(
                "health_check_failed",
                f"{label}: output {i} differs from golden by {diff:g} "
                f"(tolerance {golden.tolerance:g})",
            )
        worst = max(worst, diff)
    return worst


def make_golden(
    model_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, seed: int = 0
) -> tuple[Path, Path]:
    """Run a CPU-runnable model on a seeded random input and save the golden pair.

    Args:
        model_path: a model the CPU can run (the CPU twin of an Edge TPU build).
        out_dir: where ``golden_input.npy`` and ``golden_output.npz`` are written.
        seed: random seed of the input.

    Returns:
        (golden_input path, golden_output path).

    Raises:
        ModelError: the model cannot be loaded on the CPU.
        InferenceError: it fails to invoke.
    """
    from edge_agent.inference.backends.base import ModelRequest
    from edge_agent.inference.backends.cpu import CpuBackend

    session = CpuBackend().open(ModelRequest(os.fspath(model_path), None, "cpu", 1))
    spec = session.input
    rng = np.random.default_rng(seed)
    if np.issubdtype(spec.dtype, np.integer):
        info = np.iinfo(spec.dtype)
        data = rng.integers(info.min, info.max, size=spec.shape, endpoint=True, dtype=spec.dtype)
    else:
        data = rng.uniform(-1.0, 1.0, size=spec.shape).astype(spec.dtype)
    session.set_input(data)
    session.invoke()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gin, gout = out / "golden_input.npy", out / "golden_output.npz"
    np.save(gin, data, allow_pickle=False)
    np.savez(gout, **{str(i): a for i, a in enumerate(session.output_arrays())})
    return gin, gout
