"""Which model the daemon starts with, and starting its supervised worker.

An installed release (the update store's active one, after crash recovery) wins over
``[model] path``; a release that will not start falls back to the configured model
rather than leaving the box without detection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Callable

from edge_agent.capture.sources import SourceKind, parse_source
from edge_agent.capture.v4l2 import FitTarget, ModelFit
from edge_agent.config import CameraConfig, Config
from edge_agent.daemon.model_updates import UpdateService
from edge_agent.daemon.options import model_options
from edge_agent.daemon.preflight import check_model, no_model_error
from edge_agent.errors import EdgeAgentError
from edge_agent.inference.codec import Codec, make_codec
from edge_agent.inference.geometry import LETTERBOX
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.protocol import Cancel
from edge_agent.inference.supervisor import EventSink, Supervisor

logger = logging.getLogger(__name__)


def initial_model(
    config: Config, updates: UpdateService | None
) -> tuple[ModelOptions, dict[str, Any]]:
    """The active installed release when updates are on, else the configured model.

    Raises:
        ConfigError: no model configured (``model.path``) and no release installed
            (:func:`no_model_error`, which check-config gives too).
    """
    m = config.model
    options = model_options(config)
    meta = {
        "name": m.name or os.path.splitext(os.path.basename(m.path))[0],
        "version": m.version,
    }
    if updates is not None:
        active = updates.startup_model()
        if active is not None:
            return active
    if not m.path:
        raise no_model_error(config)
    return options, meta


def start_supervisor(
    config: Config,
    options: ModelOptions,
    meta: dict[str, Any],
    on_event: EventSink,
    cancel: Cancel | None = None,
) -> tuple[Supervisor, str]:
    """Start the worker on the chosen model, falling back to the configured one.

    Each model is first checked as ``check-config`` checks it (:func:`check_model`: the
    model and label files, the task), before a worker is spawned for it; the warnings
    about the config's settings for it (``model.labels_filter``) are logged. Once
    ``cancel`` is set (a stop signal), a load in progress is given up.

    Returns:
        The running supervisor, and the error of the release that would not start ("" when
        the chosen model started).

    Raises:
        EdgeAgentError: neither the chosen nor the configured model can run.
    """
    inf = config.inference

    def make(opts: ModelOptions, info: dict[str, Any]) -> Supervisor:
        for warning in check_model(opts, config.source).warnings:
            logger.warning("%s", warning)  # each names the config file and the key
        sup = Supervisor(
            opts,
            make_codec,
            deadline=inf.deadline,
            reprobe_initial=inf.reprobe_initial,
            reprobe_max=inf.reprobe_max,
            on_event=on_event,
            load_timeout=inf.load_timeout,
            meta=info,
        )
        sup.start(cancel)
        return sup

    try:
        return make(options, meta), ""
    except EdgeAgentError as exc:
        configured = model_options(config)
        if options == configured or not config.model.path or (cancel and cancel.is_set()):
            raise
        logger.error(
            "model %s: installed release will not start (%s); using %s",
            meta.get("name"),
            exc,
            configured.path,
        )
        fallback = {"name": os.path.basename(configured.path), "version": ""}
        return make(configured, fallback), str(exc)


def codec_fit(codec: Codec) -> ModelFit:
    """What a model (by its codec) needs from a frame, for cameras with ``fit_model``."""
    pre = codec.preprocessor
    return ModelFit(pre.width, pre.height, pre.resize == LETTERBOX)


def model_fit(supervisor: Supervisor) -> ModelFit | None:
    """What the running model needs from a frame (None before one runs)."""
    model = supervisor.current
    return None if model is None else codec_fit(model.codec)


class CameraFits:
    """Keeps each ``camera.fit_model`` device aimed at the running model's input (other
    sources have no modes to choose from: the config warns about them).

    Args:
        supervisor: the started supervisor (its model gives the first target).
        cameras: the enabled cameras' configs.
        then: called at the end of :meth:`after_switch` (the daemon's status refresh).
    """

    def __init__(
        self,
        supervisor: Supervisor,
        cameras: Sequence[CameraConfig],
        then: Callable[[], None] = lambda: None,
    ):
        self._supervisor = supervisor
        self._then = then
        fit = model_fit(supervisor)
        devices = [c for c in cameras if parse_source(c.source).kind == SourceKind.DEVICE]
        self.targets = {c.name: FitTarget(fit) for c in devices if c.fit_model and fit}

    def after_switch(self) -> None:
        """Pipeline-thread hook once per running model (a switch, a restart, a fallback):
        a camera whose model input changed reopens its device in a mode for the new one."""
        try:
            fit = model_fit(self._supervisor)
            for name, target in self.targets.items():
                if fit is not None and target.set(fit):
                    resize = "letterboxed" if fit.letterbox else "stretched"
                    logger.info(
                        "camera %s: fit_model: the model input is now %dx%d (%s); reopening "
                        "the device in a mode for it",
                        name, fit.width, fit.height, resize,
                    )  # fmt: skip
        finally:
            self._then()
