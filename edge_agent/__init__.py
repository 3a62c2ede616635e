"""edge-agent: a Coral Edge TPU inference daemon with MQTT publishing and safe model updates."""

__version__ = "0.1.0"
