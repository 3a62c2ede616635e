"""The backend interface and its registry of built-in and plugin backends.

A backend turns a model request into an allocated :class:`Session`. The engine tries
those that serve the requested device kind, best (lowest ``priority``) first. Generic
code never asks which backend it holds: differences live in the backend modules.

Backends are found the same way whether they ship with edge-agent or not: an entry point
``name = module:Class`` in the ``edge_agent.backends`` group names a :class:`Backend`
subclass whose ``name`` is the entry point's. The built-ins (edgetpu, cpu) are declared
in setup.cfg like any plugin, and also listed in :data:`BUILTINS` so that a source tree
used without installing still has them. Discovery lives in :mod:`.discovery`.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, NamedTuple

from edge_agent.errors import BackendUnavailable, EdgeAgentError
from edge_agent.inference.runtime import Session

ENTRY_POINT_GROUP = "edge_agent.backends"
# The device kinds of ``model.device`` a backend can serve.
DEVICE_KINDS = frozenset({"auto", "cpu", "usb", "pci"})
# Built-in backends, exactly as setup.cfg declares them in ENTRY_POINT_GROUP.
BUILTINS = {
    "edgetpu": "edge_agent.inference.backends.edgetpu:EdgeTpuBackend",
    "cpu": "edge_agent.inference.backends.cpu:CpuBackend",
}


class ModelRequest(NamedTuple):
    """What to load.

    Attributes:
        model_path: the configured model (an ``_edgetpu`` build or a CPU model).
        cpu_model: explicit CPU twin, or None to look beside the model.
        device: device spec: auto, cpu, usb[:N], pci[:N].
        num_threads: CPU threads (>= 1).
        edgetpu_library: ``model.edgetpu_library``: the libedgetpu to load ("" = the
            platform's default name).
    """

    model_path: str
    cpu_model: str | None
    device: str
    num_threads: int
    edgetpu_library: str = ""


def _guarded(open_: Callable[[Any, ModelRequest], Session]) -> Callable[..., Session]:
    """Wrap a backend's ``open`` so a foreign exception costs that backend only."""

    @functools.wraps(open_)
    def open(self: Backend, request: ModelRequest) -> Session:
        try:
            return open_(self, request)
        except EdgeAgentError:
            raise
        except Exception as exc:
            # The engine skips a backend on EdgeAgentErrors only: anything else from
            # third-party code would otherwise stop the model from loading anywhere.
            raise BackendUnavailable(
                f"backend {self.name} failed: {type(exc).__name__}: {exc}"
            ) from exc

    return open


class Backend(ABC):
    """One way of running a model (a module per backend, or a plugin's class).

    A subclass sets ``name`` (its entry point's name, reported in results), ``priority``
    (its rank: lower is tried first; the built-ins are edgetpu 10 and cpu 100, so an
    accelerator plugin picks a number between them to be tried before the CPU under
    ``auto``) and ``kinds`` (the device kinds it serves). Its constructor takes no
    arguments and must be cheap: the work, and any hardware access, happens in
    :meth:`open`.
    """

    name: ClassVar[str]
    priority: ClassVar[int]  # lower is tried first
    kinds: ClassVar[frozenset[str]]  # device kinds it serves: auto, cpu, usb, pci

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "open" in cls.__dict__ and not getattr(cls.__dict__["open"], "__isabstractmethod__", 0):
            cls.open = _guarded(cls.__dict__["open"])  # type: ignore[method-assign]

    def serves(self, kind: str) -> bool:
        """True when this backend should be tried for a device kind."""
        return kind in self.kinds

    @abstractmethod
    def open(self, request: ModelRequest) -> Session:
        """Load and allocate the model.

        Raises:
            BackendUnavailable: this backend cannot run here now (no device, no library).
                Any exception other than an EdgeAgentError is turned into this one.
            ModelError: the model cannot run on this backend.
        """


def registered(plugins: bool = True) -> list[type[Backend]]:
    """Backend classes (built-ins and working plugins, or the built-ins alone), best first."""
    from edge_agent.inference.backends.discovery import discover

    return list(discover(None if plugins else ()).backends)
