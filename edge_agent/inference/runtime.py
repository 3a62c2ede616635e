"""TFLite interpreter runtimes and the session wrapper every backend returns.

Two runtimes are supported. ``ai_edge_litert`` (LiteRT 2.x) is preferred for the CPU: on
the same quantized models it invoked 8-13x faster than ``tflite_runtime`` 2.14 here.
``tflite_runtime`` is what the libedgetpu builds are made against, so the Edge TPU
backend prefers it for the delegate. Both load in one process.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, Callable

import numpy as np

from edge_agent.errors import BackendUnavailable, InferenceError, ModelError
from edge_agent.inference.cores import available_cores
from edge_agent.inference.model_info import inspect_model
from edge_agent.inference.tensors import NOT_QUANTIZED, QuantParams, TensorSpec, per_tensor_quant

logger = logging.getLogger(__name__)

# Module names in order of CPU preference.
LITERT = "ai_edge_litert.interpreter"
TFLITE_RUNTIME = "tflite_runtime.interpreter"
CPU_PREFERENCE = (LITERT, TFLITE_RUNTIME)
DELEGATE_PREFERENCE = (TFLITE_RUNTIME, LITERT)

_modules: dict[str, ModuleType | None] = {}
# The runtimes' own C++ log lines ("INFO: Created TensorFlow Lite XNNPACK delegate for
# CPU.", the SSD op's WARNING, ERROR text that is also in the exception).
_RUNTIME_CHATTER = re.compile(rb"^(INFO|WARNING|ERROR|VERBOSE): ")
_stderr_lock = threading.Lock()


@contextlib.contextmanager
def capture_stderr() -> Iterator[list[bytes]]:
    """Capture what native code writes to file descriptor 2 while the block runs.

    The C++ runtimes and libjpeg write to fd 2 directly, below Python's ``sys.stderr``.
    The yielded list is filled with the captured lines (ends kept) when the block exits.
    Process-wide, so one capture runs at a time.
    """
    lines: list[bytes] = []
    with _stderr_lock:
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (daemonized without one): nothing to capture
            yield lines
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                lines.extend(capture.read().splitlines(keepends=True))


@contextlib.contextmanager
def quiet_runtime_stderr() -> Iterator[None]:
    """Keep the runtimes' native log lines off stderr while the block runs.

    Every captured line that is not runtime chatter (e.g. another thread's log record)
    is written back to the real stderr afterwards, so nothing of edge-agent's is lost.
    """
    lines: list[bytes] = []
    try:
        with capture_stderr() as lines:
            yield
    finally:
        kept = [line for line in lines if not _RUNTIME_CHATTER.match(line)]
        if kept:
            os.write(2, b"".join(kept))


def runtime_module(name: str) -> ModuleType | None:
    """Import an interpreter module once; None when it is not installed or broken.

    Args:
        name: ``LITERT`` or ``TFLITE_RUNTIME``.

    Returns:
        The module, or None.
    """
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(name)
        except Exception as exc:  # ImportError, or a wheel that fails to load
            logger.debug("runtime %s unavailable: %s", name, exc)
            _modules[name] = None
    return _modules[name]


def first_runtime(preference: Sequence[str]) -> tuple[str, ModuleType]:
    """Return the first importable runtime in ``preference``.

    Raises:
        BackendUnavailable: when none of them is installed.
    """
    for name in preference:
        module = runtime_module(name)
        if module is not None:
            return name, module
    raise BackendUnavailable(
        "no TFLite runtime installed: pip install ai-edge-litert (or tflite-runtime)"
    )


def runtime_version(name: str) -> str:
    """Best-effort version string of an interpreter runtime package, for reports."""
    package = name.split(".")[0]
    try:
        from importlib.metadata import version

        return version(package.replace("_", "-"))
    except Exception:
        return "unknown"


def default_threads() -> int:
    """All cores available to this process: its affinity mask, lowered to its cgroup's CPU
    quota (a container's ``--cpus``), not the machine's count."""
    return available_cores()


def _spec(detail: dict[str, Any]) -> TensorSpec:
    """Turn an interpreter tensor-detail dict into a TensorSpec; refuse per-channel."""
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []))
    name = detail["name"]
    quant = per_tensor_quant(name, scales, np.asarray(params.get("zero_points", [])))
    if not scales.size:
        scale, zero_point = detail.get("quantization", (0.0, 0))
        quant = QuantParams(float(scale), int(zero_point)) if scale else NOT_QUANTIZED
    return TensorSpec(
        index=int(detail["index"]),
        name=str(name),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]),
        quant=quant,
        signature=tuple(int(d) for d in detail.get("shape_signature", detail["shape"])),
    )


class Session:
    """One allocated interpreter: the thing a backend hands back.

    Attributes:
        backend: name of the backend that made it ("cpu", "edgetpu", ...).
        model_path: the file that actually runs.
        runtime: the interpreter module name.
        inputs / outputs: TensorSpecs.
    """

    def __init__(self, interpreter: Any, *, backend: str, model_path: str, runtime: str):
        self._interpreter = interpreter
        self.backend = backend
        self.model_path = model_path
        self.runtime = runtime
        try:
            self.inputs = [_spec(d) for d in interpreter.get_input_details()]
            self.outputs = [_spec(d) for d in interpreter.get_output_details()]
        except ModelError as exc:  # the tensor checks know tensors, not files
            raise ModelError(f"{model_path}: {exc}") from exc
        except Exception as exc:
            raise ModelError(f"{model_path}: cannot read tensor details: {exc}") from exc
        if len(self.inputs) != 1:
            raise ModelError(
                f"{model_path}: expected exactly one input tensor, found {len(self.inputs)}"
            )
        self.input = self.inputs[0]
        self._error_text = ""  # the runtime's cumulative error text seen so far

    def input_tensor(self) -> np.ndarray:
        """A writable view of the input tensor, so preprocessing can write in place.

        The view must not be held across ``invoke()`` (TFLite may move buffers); fetch it
        again for every frame. It is cheap.
        """
        return self._interpreter.tensor(self.input.index)()

    def set_input(self, array: np.ndarray) -> None:
        """Copy a whole input array into the input tensor."""
        self._interpreter.set_tensor(self.input.index, array)

    def invoke(self) -> float:
        """Run the model once.

        Returns:
            The wall time of ``invoke()`` in milliseconds.

        Raises:
            InferenceError: when the interpreter (or its delegate) fails.
        """
        start = time.perf_counter()
        try:
            self._interpreter.invoke()
        except Exception as exc:
            raise InferenceError(
                f"{self.model_path} ({self.backend}): invoke failed: {self._new_error(exc)}"
            ) from exc
        return (time.perf_counter() - start) * 1000.0

    def _new_error(self, exc: Exception) -> str:
        """This failure's text only: both runtimes' error reporters append every failure
        to one buffer that is never cleared (66 bytes a failure, 132 KB after 2000)."""
        text = str(exc)
        fresh = text[len(self._error_text) :] if text.startswith(self._error_text) else text
        self._error_text = text
        return fresh.strip()[:500] or text[-500:]

    def output(self, i: int) -> np.ndarray:
        """A copy of output tensor ``i`` (copies are safe across the next invoke)."""
        return self._interpreter.get_tensor(self.outputs[i].index)

    def output_arrays(self) -> list[np.ndarray]:
        """Copies of every output tensor, in output order."""
        return [self.output(i) for i in range(len(self.outputs))]


def invoke(session: Session) -> float:
    """``session.invoke()``, whose failure is always an InferenceError: a plugin's session
    may raise its accelerator library's own exceptions.

    Returns:
        The invoke's wall time in milliseconds.
    """
    try:
        return session.invoke()
    except InferenceError:
        raise
    except Exception as exc:
        raise InferenceError(
            f"{session.model_path} ({session.backend}): invoke failed: {type(exc).__name__}: {exc}"
        ) from exc


def checked_outputs(session: Session) -> list[np.ndarray]:
    """Copies of every output of the last invoke, checked against the tensors the session
    declared (its codec was built from those).

    Raises:
        InferenceError: an output of another shape or type (a backend plugin's bug): decoded
            or broadcast as the model's, it would pass for a frame with nothing in it.
    """
    arrays = [np.asarray(session.output(i)) for i in range(len(session.outputs))]
    for spec, array in zip(session.outputs, arrays):
        if array.shape != spec.shape or array.dtype != spec.dtype:
            raise InferenceError(
                f"{session.model_path} ({session.backend}): output {spec.name!r} came back "
                f"{array.dtype} {list(array.shape)}, declared {spec.dtype} {list(spec.shape)}"
            )
    return arrays


def make_session(
    module: ModuleType,
    runtime: str,
    model_path: str,
    *,
    backend: str,
    num_threads: int,
    delegates: Sequence[Any] = (),
    interpreter_factory: Callable[..., Any] | None = None,
) -> Session:
    """Create and allocate an interpreter, wrapped in a Session.

    Args:
        module: the runtime's interpreter module (provides ``Interpreter``).
        runtime: its name, for reports.
        model_path: model file to load.
        backend: backend name recorded in the session.
        num_threads: CPU threads for the interpreter (>= 1).
        delegates: delegate handles from ``load_delegate``.
        interpreter_factory: replaces ``module.Interpreter`` (test doubles).

    Raises:
        ModelError: the file is unreadable or the graph fails to allocate (e.g. an
            unresolved custom op such as ``edgetpu-custom-op`` without its delegate).
    """
    factory = interpreter_factory or module.Interpreter
    if num_threads > 1 and inspect_model(model_path).single_threaded:
        logger.warning(
            "model %s: running on 1 thread instead of %d: its SSD post-processing op drops "
            "detections when multi-threaded (tensorflow#56058)",
            model_path,
            num_threads,
        )
        num_threads = 1
    kwargs: dict[str, Any] = {"model_path": model_path, "num_threads": num_threads}
    if delegates:
        kwargs["experimental_delegates"] = list(delegates)
    try:
        with quiet_runtime_stderr():
            interpreter = factory(**kwargs)
            interpreter.allocate_tensors()
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{model_path}: cannot load on {backend}: {message}") from exc
    return Session(interpreter, backend=backend, model_path=model_path, runtime=runtime)
