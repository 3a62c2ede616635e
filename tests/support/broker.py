"""MQTT broker fixtures (filled in by the publishing work)."""
