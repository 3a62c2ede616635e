"""The backend interface and its registry.

A backend turns a model request into an allocated :class:`Session`. Backends register
themselves with a priority; the engine tries those that serve the requested device
kind, best first. Generic code never asks which backend it holds: differences live here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

from edge_agent.inference.runtime import Session


class ModelRequest(NamedTuple):
    """What to load.

    Attributes:
        model_path: the configured model (an ``_edgetpu`` build or a CPU model).
        cpu_model: explicit CPU twin, or None to look beside the model.
        device: device spec: auto, cpu, usb[:N], pci[:N].
        num_threads: CPU threads (>= 1).
    """

    model_path: str
    cpu_model: str | None
    device: str
    num_threads: int


class Backend(ABC):
    """One way of running a model (a module per backend under ``backends/``)."""

    name: ClassVar[str]
    priority: ClassVar[int]  # lower is tried first
    kinds: ClassVar[frozenset[str]]  # device kinds it serves: auto, cpu, usb, pci

    def serves(self, kind: str) -> bool:
        """True when this backend should be tried for a device kind."""
        return kind in self.kinds

    @abstractmethod
    def open(self, request: ModelRequest) -> Session:
        """Load and allocate the model.

        Raises:
            BackendUnavailable: this backend cannot run here now (no device, no library).
            ModelError: the model cannot run on this backend.
        """


_REGISTRY: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator adding a backend to the registry."""
    _REGISTRY[cls.name] = cls
    return cls


def registered() -> list[type[Backend]]:
    """Registered backend classes, best first."""
    from edge_agent.inference.backends import cpu, edgetpu  # noqa: F401  (they register)

    return sorted(_REGISTRY.values(), key=lambda c: c.priority)
