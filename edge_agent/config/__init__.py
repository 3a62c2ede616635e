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

    Args:
        path: the config file.

    Returns:
        The validated configuration; its ``warnings`` are worth showing the user.

    Raises:
        ConfigError: the file cannot be read or is invalid (one message naming the
            file and the dotted key).
    """
    return load_config(path)
