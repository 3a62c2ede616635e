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

Loading reads the config file only. The model and label files it names are checked by
:mod:`edge_agent.daemon.preflight`, which ``run`` and ``check-config`` share.
"""

from __future__ import annotations

from edge_agent.config.loader import (
    DEFAULT_CONFIG_PATH,
    ENV_OVERRIDES,
    config_path_from_env,
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
    "config_path_from_env",
    "import_toml",
    "load_config",
    "parse_config",
]
