"""TOML configuration: one file, validated at load into frozen dataclasses.

Typical use::

    config = load_config()            # /etc/edge-agent/config.toml
    for warning in config.warnings:
        logger.warning("%s", warning)
    config.mqtt.port, config.camera[0].source, config.model.threshold

Validation is strict and complete at load: an unknown key, a wrong type, a value out
of range or an inconsistent combination raises one :class:`ConfigError` such as
``config.toml: mqtt.port: expected integer 1..65535, got "abc"``. Relative paths are
resolved against the config file's directory. ``EDGE_AGENT_MQTT_USERNAME`` and
``EDGE_AGENT_MQTT_PASSWORD`` override the file. See ``deploy/config.example.toml``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Union

from edge_agent.config.loader import (
    DEFAULT_CONFIG_PATH,
    ENV_OVERRIDES,
    import_toml,
    load_config,
    parse_config,
)
from edge_agent.config.schema import (
    CameraConfig,
    Config,
    DeviceConfig,
    InferenceConfig,
    LoggingConfig,
    ModelConfig,
    MqttConfig,
    StatsConfig,
    UpdatesConfig,
)
from edge_agent.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_OVERRIDES",
    "CameraConfig",
    "Config",
    "ConfigError",
    "DeviceConfig",
    "InferenceConfig",
    "LoggingConfig",
    "ModelConfig",
    "MqttConfig",
    "StatsConfig",
    "UpdatesConfig",
    "check_config",
    "import_toml",
    "load_config",
    "parse_config",
]


def check_config(path: Union[str, os.PathLike] = DEFAULT_CONFIG_PATH) -> Config:
    """Validate a config file the way the daemon would load it (``edge-agent check-config``).

    Only the file is read: model files, devices and the broker are not touched
    (``edge-agent doctor`` checks those).

    Beyond ``load_config``'s warnings, a config that `run` would refuse (no
    ``model.path`` and no release installed by an update) gets a warning naming
    ``model.path``.

    Args:
        path: the config file.

    Returns:
        The validated configuration; its ``warnings`` are worth showing the user.

    Raises:
        ConfigError: the file cannot be read or is invalid (``ConfigErrors`` holds
            one error per problem, each naming the file and the dotted key).
    """
    config = load_config(path)
    missing = _missing_model(config)
    if missing:
        config = dataclasses.replace(config, warnings=(*config.warnings, missing))
    return config


def _missing_model(config: Config) -> str:
    """The warning for a config with no model to run, or ""."""
    if config.model.path:
        return ""
    releases = os.path.join(config.device.state_dir, "models")
    if config.updates.enabled and os.path.isdir(releases) and os.listdir(releases):
        return ""  # run starts the release an update installed
    return (
        f"{config.source}: model.path: no model configured and no release installed in "
        f"{releases}; `edge-agent run` will refuse to start: set model.path"
    )
