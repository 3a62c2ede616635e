"""CPU backend: LiteRT when installed (8-13x faster here), else tflite-runtime."""

from __future__ import annotations

import os
from pathlib import Path

from edge_agent.errors import ModelError
from edge_agent.inference.backends.base import Backend, ModelRequest
from edge_agent.inference.model_info import cpu_twin_candidates, inspect_model
from edge_agent.inference.runtime import CPU_PREFERENCE, Session, first_runtime, make_session


def resolve_cpu_model(model_path: str, cpu_model: str | None) -> str:
    """The file the CPU can run for a configured model.

    An Edge-TPU-compiled model cannot run on the CPU (``edgetpu-custom-op``), so its
    CPU twin is used: the explicit ``cpu_model``, else ``foo.tflite`` beside
    ``foo_edgetpu.tflite``.

    Raises:
        ModelError: the model is Edge-TPU-only and no twin exists, or a file is unusable.
    """
    if cpu_model:
        facts = inspect_model(cpu_model)
        if facts.edgetpu:
            raise ModelError(f"cpu_model {cpu_model} is itself compiled for the Edge TPU")
        return cpu_model
    facts = inspect_model(model_path)
    if not facts.edgetpu:
        return model_path
    looked = cpu_twin_candidates(model_path)
    for twin in looked:
        if twin.is_file() and not inspect_model(twin).edgetpu:
            return os.fspath(twin)
    where = ", ".join(os.fspath(p) for p in looked) or f"beside {Path(model_path).name}"
    raise ModelError(
        f"{model_path} is compiled for the Edge TPU only and cannot run on the CPU, "
        f"and no CPU twin was found (looked for {where}; set model.cpu_model)"
    )


class CpuBackend(Backend):
    """Runs the CPU build of the model on the best installed runtime."""

    name = "cpu"
    priority = 100
    kinds = frozenset({"auto", "cpu", "usb", "pci"})  # the fallback for every request

    def open(self, request: ModelRequest) -> Session:
        """Load the CPU model (the twin of an Edge TPU model when needed)."""
        path = resolve_cpu_model(request.model_path, request.cpu_model)
        runtime, module = first_runtime(CPU_PREFERENCE)
        return make_session(
            module, runtime, path, backend=self.name, num_threads=request.num_threads
        )
