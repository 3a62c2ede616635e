"""What ``edge-agent run`` checks before it starts a model, shared with ``check-config``.

One implementation, so that check-config says OK only for a config that run gets past:
a model must be configured (or a release installed by an update), and the model run
would start must pass :func:`~edge_agent.inference.codec.static_codec` (the model file
is TFLite, the label file reads, the outputs fit the task). All of it is read from the
files, with no interpreter and no device: what only the box can tell (no Edge TPU and no
CPU twin for an ``_edgetpu`` model, a model the interpreter refuses) still stops ``run``
alone; ``edge-agent doctor`` checks those.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from edge_agent.config import Config
from edge_agent.daemon.options import model_options
from edge_agent.errors import ConfigError, ModelError
from edge_agent.inference.codec import Codec, static_codec
from edge_agent.inference.model import ModelOptions


class ModelCheck(NamedTuple):
    """A model that passed the checks: its codec (for reports), and the warnings about
    the config's settings for it, each naming the config file and the key."""

    codec: Codec
    warnings: tuple[str, ...]


class StartupCheck(NamedTuple):
    """What check-config reports about the model ``run`` would start.

    Attributes:
        options: the configured model (None: none configured, an installed release runs).
        codec: its codec (None when it was not checked or is only a broken fallback).
        warnings: config warnings, each naming the config file and the key.
    """

    options: ModelOptions | None
    codec: Codec | None
    warnings: tuple[str, ...]


def releases_dir(config: Config) -> str:
    """Where model updates install their releases."""
    return os.path.join(config.device.state_dir, "models")


def release_installed(config: Config) -> bool:
    """True when ``run`` would start a release an update installed, not ``model.path``
    (read-only: run itself first recovers the store, which check-config must not do)."""
    releases = releases_dir(config)
    return config.updates.enabled and os.path.isdir(releases) and bool(os.listdir(releases))


def no_model_error(config: Config) -> ConfigError:
    """The error of a config with no model to start (run raises it, check-config prints it)."""
    return ConfigError(
        f"no model configured and no release installed in {releases_dir(config)}; set model.path",
        file=config.source or None,
        key="model.path",
    )


def check_model(options: ModelOptions, source: str) -> ModelCheck:
    """Check a model before it is started (``run``) or reported (``check-config``).

    Args:
        options: the model to start (the configured one, or an installed release).
        source: the config file, named by the warnings.

    Raises:
        ModelError: the model cannot start; ``key`` names the setting at fault.
    """
    codec = static_codec(options)
    return ModelCheck(codec, ())


def check_startup(config: Config) -> StartupCheck:
    """What ``run`` would refuse or warn about at start, read from the files.

    With a release installed by an update, run starts the release and ``model.path`` is
    only its fallback: a broken fallback is then a warning, not an error.

    Raises:
        ConfigError: run would refuse to start; the message names the config file and
            the key (``model.path``, ``model.labels`` or ``model.task``).
    """
    options = model_options(config)
    fallback = release_installed(config)
    if not options.path:
        if fallback:
            return StartupCheck(None, None, ())
        raise no_model_error(config)
    try:
        check = check_model(options, config.source)
    except ModelError as exc:
        error = ConfigError(str(exc), file=config.source or None, key=exc.key or "model.path")
        if not fallback:
            raise error from exc
        note = f"{error} (run starts the release installed in {releases_dir(config)} first)"
        return StartupCheck(options, None, (note,))
    return StartupCheck(options, check.codec, check.warnings)
