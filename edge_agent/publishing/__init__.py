"""MQTT publishing: topics, client with on-disk spool, Home Assistant discovery."""
