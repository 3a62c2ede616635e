"""Edge TPU backend: ``load_delegate(libedgetpu, {"device": spec})``.

The hardware is reached through a *driver*: it lists devices (pycoral or sysfs), loads
libedgetpu (``model.edgetpu_library``, else the platform's name) with tflite-runtime
first (libedgetpu is built against it) and builds the interpreter with the same runtime
that loaded the delegate. A subclass registered as a backend plugin under the name
``edgetpu`` can bring another driver (see :mod:`.discovery`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

from edge_agent.errors import BackendUnavailable, ModelError
from edge_agent.inference.backends.base import Backend, ModelRequest
from edge_agent.inference.devices import (
    TpuDevice,
    delegate_library,
    list_edge_tpus,
    parse_device_spec,
)
from edge_agent.inference.model_info import edgetpu_twin_candidates, inspect_model
from edge_agent.inference.runtime import DELEGATE_PREFERENCE, Session, first_runtime, make_session

logger = logging.getLogger(__name__)

LIBRARY_KEY = "model.edgetpu_library"


class EdgeTpuDriver(Protocol):
    """What the backend needs from the hardware layer."""

    def list_devices(self) -> list[TpuDevice]:
        """Edge TPUs currently visible."""

    def load_delegate(self, library: str, options: dict[str, str]) -> Any:
        """Load the libedgetpu delegate (raises on failure)."""

    def make_session(self, model_path: str, delegate: Any, num_threads: int) -> Session:
        """An allocated session of the model with the delegate (raises ModelError)."""


class LibEdgeTpuDriver:
    """The real thing: libedgetpu through the runtime's ``load_delegate``."""

    def __init__(self) -> None:
        self._runtime: tuple[str, Any] | None = None

    def list_devices(self) -> list[TpuDevice]:
        """Edge TPUs from pycoral or sysfs."""
        return list_edge_tpus()

    def load_delegate(self, library: str, options: dict[str, str]) -> Any:
        """Load the delegate with the first runtime that has ``load_delegate``."""
        self._runtime = first_runtime(DELEGATE_PREFERENCE)
        return self._runtime[1].load_delegate(library, options)

    def make_session(self, model_path: str, delegate: Any, num_threads: int) -> Session:
        """Build the interpreter with the runtime that loaded the delegate."""
        runtime, module = self._runtime or first_runtime(DELEGATE_PREFERENCE)
        return make_session(
            module,
            runtime,
            model_path,
            backend=EdgeTpuBackend.name,
            num_threads=num_threads,
            delegates=[delegate],
        )


def delegate_path(configured: str) -> str:
    """The libedgetpu to load: ``model.edgetpu_library``, else the platform's name.

    A configured name without a slash is left to the dynamic loader's search path.

    Raises:
        BackendUnavailable: the configured path is not a file.
    """
    if not configured:
        return delegate_library()
    if os.sep in configured and not os.path.isfile(configured):
        raise BackendUnavailable(f"{LIBRARY_KEY} = {configured!r}: no such file")
    return configured


def resolve_edgetpu_model(model_path: str) -> str:
    """The Edge TPU build for a configured model: itself, or ``foo_edgetpu.tflite`` beside it.

    Raises:
        ModelError: no Edge TPU build exists (the CPU backend will run it; no TPU plugged
            in later could run this model), or the configured file is unusable.
    """
    if inspect_model(model_path).edgetpu:
        return model_path
    for twin in edgetpu_twin_candidates(model_path):
        if twin.is_file() and inspect_model(twin).edgetpu:
            return os.fspath(twin)
    raise ModelError(f"{model_path} has no Edge TPU build (no *_edgetpu.tflite beside it)")


class EdgeTpuBackend(Backend):
    """Runs the ``_edgetpu`` build of the model through the libedgetpu delegate."""

    name = "edgetpu"
    priority = 10
    kinds = frozenset({"auto", "usb", "pci"})

    def __init__(self, driver: EdgeTpuDriver | None = None):
        self.driver: EdgeTpuDriver = driver or LibEdgeTpuDriver()

    def list_devices(self) -> list[TpuDevice]:
        """The Edge TPUs this backend's driver sees (for the doctor)."""
        return self.driver.list_devices()

    def open(self, request: ModelRequest) -> Session:
        """Load the Edge TPU model on the requested device.

        Raises:
            BackendUnavailable: no device, or the delegate fails.
            ModelError: no Edge TPU build, or the model fails to allocate with the delegate.
        """
        path = resolve_edgetpu_model(request.model_path)
        kind, index = parse_device_spec(request.device)
        devices = self.driver.list_devices()
        wanted = [d for d in devices if kind == "auto" or d.type == kind]
        if not wanted or (index is not None and index >= len(wanted)):
            raise BackendUnavailable(
                f"no Edge TPU matching {request.device!r} found "
                f"({len(devices)} visible: {', '.join(d.type for d in devices) or 'none'})"
            )
        # libedgetpu takes "usb", "usb:N", "pci", "pci:N"; no option means "any".
        options = {} if kind == "auto" else {"device": request.device}
        library = delegate_path(request.edgetpu_library)
        try:
            delegate = self.driver.load_delegate(library, options)
        except Exception as exc:
            where = f" ({LIBRARY_KEY})" if request.edgetpu_library else ""
            raise BackendUnavailable(
                f"cannot load the Edge TPU delegate {library}{where} {options or ''}: {exc}"
            ) from exc
        try:
            return self.driver.make_session(path, delegate, request.num_threads)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{path}: cannot load on the Edge TPU: {exc}") from exc
