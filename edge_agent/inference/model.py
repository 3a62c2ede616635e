"""A model ready to run on images: engine + preprocessing + decoding.

``edge-agent infer`` and the benchmark use :class:`LoadedModel` in-process. The daemon
splits the same parts across processes: the engine runs in the inference worker, while
:mod:`edge_agent.inference.codec` gives the preprocessor and decoder for the pipeline side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from edge_agent.inference.backends.base import Backend, ModelRequest
from edge_agent.inference.codec import Codec, build_codec, load_labels, log_codec
from edge_agent.inference.engine import Engine
from edge_agent.inference.postprocess import DecodeSettings, Result
from edge_agent.inference.runtime import default_threads

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOptions:
    """Everything needed to load and use a model (mirrors the ``[model]`` config)."""

    path: str
    cpu_model: str = ""
    labels: str = ""
    device: str = "auto"
    num_threads: int = 0
    task: str = "auto"
    resize: str = "auto"
    input_mean: Sequence[float] | None = None
    input_std: Sequence[float] | None = None
    settings: DecodeSettings = field(default_factory=DecodeSettings)
    labels_filter: Sequence[str] = ()
    warmup: bool = True
    edgetpu_library: str = ""

    def request(self) -> ModelRequest:
        """The backend request for these options."""
        return ModelRequest(
            model_path=self.path,
            cpu_model=self.cpu_model or None,
            device=self.device,
            num_threads=self.num_threads or default_threads(),
            edgetpu_library=self.edgetpu_library,
        )


class Inference(NamedTuple):
    """One image's outcome."""

    results: list[Result]
    inference_ms: float
    preprocess_ms: float
    postprocess_ms: float
    backend: str
    model_path: str
    task: str


class LoadedModel:
    """A model loaded in this process (``infer``, ``bench``).

    Use :meth:`load`.
    """

    def __init__(self, options: ModelOptions, engine: Engine, codec: Codec):
        self.options = options
        self.engine = engine
        self.codec = codec

    @classmethod
    def load(cls, options: ModelOptions, backends: Sequence[Backend] | None = None) -> LoadedModel:
        """Load on the best backend and prepare the codec.

        Raises:
            ModelError / BackendUnavailable: see :meth:`Engine.open`.
        """
        labels = load_labels(options)
        engine = Engine.open(options.request(), backends, warmup=options.warmup)
        session = engine.session
        codec = build_codec(session.input, session.outputs, options, labels)
        log_codec(codec, options.path)
        return cls(options, engine, codec)

    @property
    def task(self) -> str:
        """The model's task (auto-detected unless configured)."""
        return self.codec.decoder.task

    def infer(self, image: np.ndarray) -> Inference:
        """Run one BGR frame through the model.

        Raises:
            InferenceError: every backend failed.
        """
        t0 = time.perf_counter()
        fit, outputs, invoke_ms = self.engine.run(
            lambda tensor: self.codec.preprocessor(image, tensor)
        )
        t1 = time.perf_counter()
        results = self.codec.decoder(outputs, fit)
        t2 = time.perf_counter()
        return Inference(
            results=results,
            inference_ms=invoke_ms,
            preprocess_ms=(t1 - t0) * 1000.0 - invoke_ms,
            postprocess_ms=(t2 - t1) * 1000.0,
            backend=self.engine.backend,
            model_path=self.engine.model_path,
            task=self.task,
        )
