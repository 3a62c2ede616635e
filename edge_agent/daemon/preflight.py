"""What ``edge-agent run`` checks before it starts a model, shared with ``check-config``.

One implementation, so that check-config says OK only for a config that run gets past:
a model must be configured (or a release installed by an update), and the model run
would start must pass :func:`~edge_agent.inference.codec.static_codec` (the model file
is TFLite, the label file reads, the outputs fit the task). All of it is read from the
files, with no interpreter and no device: what only the box can tell (no Edge TPU and no
CPU twin for an ``_edgetpu`` model, a model the interpreter refuses) still stops ``run``
alone; ``edge-agent doctor`` checks those.

``model.labels_filter`` entries that match no label the model can give are warned about
here too: the daemon would drop every result they were meant to keep.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from typing import NamedTuple

from edge_agent.config import Config
from edge_agent.config.checks import did_you_mean, show
from edge_agent.daemon.ha_discovery import device_topics, entity_messages
from edge_agent.daemon.options import device_id, model_options, mqtt_settings
from edge_agent.errors import ConfigError, ModelError, ModelUpdateError
from edge_agent.inference.backends.cpu import resolve_cpu_model
from edge_agent.inference.codec import LABELS_FILE, LABELS_MODEL, Codec, static_codec
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.postprocess import Decoder
from edge_agent.publishing.settings import ssl_context
from edge_agent.updates.signing import TrustedKeys

logger = logging.getLogger(__name__)


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


def _releases_known(config: Config) -> tuple[bool, tuple[str, ...]]:
    """:func:`release_installed`, and a warning when the directory cannot be listed
    (check-config run by a user other than the daemon's: it is then taken as empty)."""
    try:
        return release_installed(config), ()
    except OSError as exc:
        return False, (
            f"{config.source}: device.state_dir: cannot list {releases_dir(config)} "
            f"({exc.strerror}), so whether an update installed a release is unknown: "
            "model.path was checked as the model run starts",
        )


def trusted_keys(config: Config) -> TrustedKeys:
    """Read ``updates.trusted_keys``, as ``run`` does at start (check-config too).

    Raises:
        ConfigError: naming the config file and ``updates.trusted_keys[N]``, the first
            entry that is unreadable or not an Ed25519 public key.
    """
    paths = config.updates.trusted_keys
    try:
        return TrustedKeys.from_paths(paths)
    except ModelUpdateError as exc:
        index = next((i for i, path in enumerate(paths) if _bad_key(path)), 0)
        message = str(exc).removeprefix(f"{exc.reason}: ")
        key = f"updates.trusted_keys[{index}]"
        raise ConfigError(message, file=config.source or None, key=key) from exc


def _bad_key(path: str) -> bool:
    """True when the one ``trusted_keys`` entry ``path`` cannot be read as keys."""
    try:
        TrustedKeys.from_paths([path])
    except ModelUpdateError:
        return True
    return False


def check_start_files(config: Config) -> None:
    """The files besides the model that ``run`` reads at start and refuses to start
    without: the MQTT TLS files (``ssl_context``) and the trusted update keys.

    Raises:
        ConfigError: naming the config file and the key.
    """
    if config.mqtt.enabled:
        try:
            ssl_context(mqtt_settings(config))
        except ConfigError as exc:
            raise ConfigError(str(exc), file=config.source or None) from exc
    if config.updates.enabled:
        trusted_keys(config)


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
        ModelError: the model cannot start; ``key`` names the setting at fault (also
            ``model.cpu_model``: set, and unreadable or itself an Edge TPU model).
    """
    codec = static_codec(options)
    if options.cpu_model:  # the CPU backend's file, named by the config: read it too
        try:
            resolve_cpu_model(options.path, options.cpu_model)
        except ModelError as exc:
            raise ModelError(str(exc), key="model.cpu_model") from exc
    warnings = filter_warnings(source, options.labels_filter, options, codec)
    return ModelCheck(codec, tuple(warnings))


def filter_warnings(
    source: str, labels_filter: Sequence[str], options: ModelOptions, codec: Codec
) -> list[str]:
    """One warning per ``labels_filter`` entry that no result of this model (its
    ``options`` and ``codec``) can carry."""
    where = {LABELS_FILE: f"labels from {options.labels}", LABELS_MODEL: "labels from its metadata"}
    names, open_ended = label_names(codec.decoder)
    return labels_filter_warnings(
        source, labels_filter, names, where.get(codec.labels_source, ""), open_ended
    )


def label_names(decoder: Decoder) -> tuple[frozenset[str], bool]:
    """Every label a result of this decoder can carry, and whether class ids beyond them
    may come too (an SSD model that does not say how many classes it has: its
    unlabelled classes are named by their id)."""
    if decoder.num_classes:
        return frozenset(decoder.label(i) for i in range(decoder.num_classes)), False
    return frozenset(decoder.labels.values()), True


def labels_filter_warnings(
    source: str,
    labels_filter: Sequence[str],
    names: Collection[str],
    where: str,
    open_ended: bool = False,
) -> list[str]:
    """One warning per ``labels_filter`` entry that is none of ``names``.

    Args:
        source: the config file ("" when built in code).
        labels_filter: the configured entries.
        names: every label a result can carry (see :func:`label_names`).
        where: where the labels come from, e.g. ``labels from /x/coco.txt``; "" when the
            model has none (its results are named by class id).
        open_ended: results may also carry class ids that are not in ``names``.
    """
    prefix = f"{source}: " if source else ""
    warnings = []
    for entry in labels_filter:
        if entry in names or (open_ended and entry.isdecimal()):
            continue
        if where:
            problem = f"{show(entry)} is not a label of the model ({where}), so it keeps nothing"
        else:
            problem = (
                f"{show(entry)} is not a label of the model: it has no labels and its results "
                "are named by class id; set model.labels"
            )
        warnings.append(f"{prefix}model.labels_filter: {problem}{did_you_mean(entry, names)}")
    return warnings


def check_startup(config: Config) -> StartupCheck:
    """What ``run`` would refuse or warn about at start, read from the files.

    With a release installed by an update, run starts the release and ``model.path`` is
    only its fallback: a broken fallback is then a warning, not an error.

    Raises:
        ConfigError: run would refuse to start; the message names the config file and
            the key (``model.path``, ``model.labels`` or ``model.task``; ``camera.name``
            when two Home Assistant entities would get one id; ``mqtt.ca_file`` and the
            other TLS files; ``updates.trusted_keys[N]``).
    """
    try:  # two Home Assistant entities of one id: run refuses to start
        entity_messages(
            config, device_topics(config, device_id(config)), events=config.events.enabled
        )
    except ConfigError as exc:
        raise ConfigError(str(exc), file=config.source or None) from exc
    check_start_files(config)
    options = model_options(config)
    fallback, unknown = _releases_known(config)
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
    return StartupCheck(options, check.codec, unknown + check.warnings)
