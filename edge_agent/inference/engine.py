"""Load a model on the best backend available and fail over when it breaks.

The engine tries the registered backends that serve the requested device, best first
(the Edge TPU, then the CPU). It records which backend and which file actually run,
and why the better ones were skipped. If the running backend fails at invoke time and
a worse one remains, it switches and retries the frame (``fail_over``: the in-process
path of ``infer``, the doctor and the bare benchmark). Going back to a better backend
when the TPU returns is the supervisor's re-probe (``inference/reprobe.py``): only the
daemon runs long enough to need it, and there a failed backend costs a worker process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Callable, NamedTuple, TypeVar

import numpy as np

from edge_agent.errors import BackendUnavailable, InferenceError, ModelError
from edge_agent.inference.backends.base import Backend, ModelRequest, registered
from edge_agent.inference.devices import parse_device_spec
from edge_agent.inference.protocol import WorkerInfo
from edge_agent.inference.runtime import Session, checked_outputs, invoke

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Attempt(NamedTuple):
    """Why a backend was not used."""

    backend: str
    reason: str


def candidate_backends(device: str, backends: Sequence[Backend] | None = None) -> list[Backend]:
    """Backends to try for a device spec, best first.

    Args:
        device: auto, cpu, usb[:N] or pci[:N].
        backends: instances to choose from (default: one of each registered class).

    Raises:
        ValueError: an invalid device spec.
    """
    kind, _ = parse_device_spec(device)
    pool = list(backends) if backends is not None else [cls() for cls in registered()]
    pool.sort(key=lambda b: b.priority)
    return [b for b in pool if b.serves(kind)]


class Engine:
    """A model loaded on one backend, with the others kept as fallbacks.

    Use :meth:`open`; then :meth:`run` for each frame.
    """

    def __init__(self, request: ModelRequest, candidates: list[Backend], *, warmup: bool = True):
        self.request = request
        self._warmup = warmup
        self._candidates = candidates
        self._current = -1
        self.session: Session | None = None
        self.attempts: list[Attempt] = []
        self.absent: list[str] = []  # backends skipped as unavailable here (BackendUnavailable)
        self._on_attempt: Callable[[str], None] | None = None

    @classmethod
    def open(
        cls,
        request: ModelRequest,
        backends: Sequence[Backend] | None = None,
        *,
        warmup: bool = True,
        on_attempt: Callable[[str], None] | None = None,
    ) -> Engine:
        """Load the model on the best backend that works.

        Args:
            request: what to load.
            backends: backend instances (tests inject doubles); default: the registry.
            warmup: run one invoke after loading (the first invoke is slow, and a broken
                delegate is found now rather than on the first frame).
            on_attempt: told each backend's name before it is tried (the worker reports
                it, so a backend whose loading kills the process is known and skipped).

        Returns:
            The engine.

        Raises:
            ModelError / BackendUnavailable: no backend can run the model; the message
                carries every backend's reason.
        """
        engine = cls(request, candidate_backends(request.device, backends), warmup=warmup)
        engine._on_attempt = on_attempt
        engine._open_from(0)
        return engine

    @property
    def backend(self) -> str:
        """Name of the backend that runs now."""
        return self.session.backend if self.session else "none"

    @property
    def has_fallback(self) -> bool:
        """True when a worse backend remains to fall back to."""
        return self._current + 1 < len(self._candidates)

    @property
    def model_path(self) -> str:
        """The file that actually runs."""
        return self.session.model_path if self.session else ""

    def worker_info(self, pid: int, ranked: Sequence[str], started: float) -> WorkerInfo:
        """What a worker that opened this engine reports.

        Args:
            pid: the worker's id.
            ranked: every registered backend's name, best first.
            started: ``time.perf_counter()`` when the worker began loading.
        """
        session = self.session
        return WorkerInfo(
            pid,
            session.backend,
            list(ranked).index(session.backend),
            self.has_fallback,
            session.model_path,
            session.runtime,
            session.input,
            tuple(session.outputs),
            tuple(tuple(a) for a in self.attempts),
            (time.perf_counter() - started) * 1000.0,
            tuple(self.absent),
        )

    def _try(self, backend: Backend) -> Session:
        """Open on one backend and warm it up."""
        session = backend.open(self.request)
        if self._warmup:
            # allocate_tensors() leaves the input uninitialised: warm up on a defined
            # (black) frame, so a warm-up failure is the model's, never chance.
            session.input_tensor().fill(0)
            invoke(session)
        return session

    def _open_from(self, start: int) -> None:
        """Open on the first backend from ``start`` that works; raise if none does."""
        last: Exception | None = None
        for i in range(start, len(self._candidates)):
            backend = self._candidates[i]
            if self._on_attempt is not None:
                self._on_attempt(backend.name)
            try:
                session = self._try(backend)
            except (BackendUnavailable, ModelError, InferenceError) as exc:
                self.attempts.append(Attempt(backend.name, str(exc)))
                if isinstance(exc, BackendUnavailable):
                    self.absent.append(backend.name)
                logger.info(
                    "model %s: backend %s skipped: %s", self.request.model_path, backend.name, exc
                )
                last = exc
                continue
            self.session, self._current = session, i
            logger.info(
                "model %s: running %s on %s (%s)",
                self.request.model_path,
                session.model_path,
                session.backend,
                session.runtime,
            )
            return
        # The same file problem seen by every backend is reported once.
        seen: dict[str, str] = {}
        for a in self.attempts[-(len(self._candidates) - start) :]:
            seen.setdefault(a.reason, a.backend)
        reasons = "; ".join(f"{backend}: {reason}" for reason, backend in seen.items())
        if len(seen) == 1 and len(self._candidates) - start > 1:
            reasons = next(iter(seen))
        if isinstance(last, ModelError) or last is None:
            raise ModelError(
                reasons or f"no backend serves device {self.request.device!r}"
            ) from last
        raise BackendUnavailable(reasons) from last

    def fail_over(self, reason: str) -> None:
        """Give up the current backend for the next one.

        Raises:
            InferenceError: no worse backend remains.
        """
        failed = self.backend
        if self._current + 1 >= len(self._candidates):
            raise InferenceError(
                f"model {self.request.model_path}: {failed} failed and no "
                f"fallback remains: {reason}"
            )
        logger.warning(
            "model %s: backend %s failed (%s); falling back",
            self.request.model_path,
            failed,
            reason,
        )
        self.attempts.append(Attempt(failed, reason))
        self._open_from(self._current + 1)

    def run(self, fill: Callable[[np.ndarray], T]) -> tuple[T, list[np.ndarray], float]:
        """Fill the input, invoke, and return the outputs, failing over once if needed.

        Args:
            fill: writes the input into the tensor view it is given; its return value
                (e.g. the preprocessing Fit) is passed back.

        Returns:
            (fill's return value, output arrays, invoke milliseconds).

        Raises:
            InferenceError: the last remaining backend failed.
        """
        while True:
            session = self.session
            assert session is not None
            value = fill(session.input_tensor())
            try:
                ms = invoke(session)
                outputs = checked_outputs(session)
            except InferenceError as exc:
                self.fail_over(str(exc))
                continue
            return value, outputs, ms
