"""Tier 1: a reload applies only what the running daemon can honour live."""

from __future__ import annotations

import dataclasses

from edge_agent.config import Config
from edge_agent.config.schema import (
    CameraConfig,
    DeviceConfig,
    EventsConfig,
    LoggingConfig,
    ModelConfig,
    TrackConfig,
    ZoneConfig,
)
from edge_agent.daemon.reload import plan_reload


def test_thresholds_and_log_level_apply_other_changes_keep_running_values():
    running = Config(
        device=DeviceConfig(groups=("lobby",)),
        model=ModelConfig(path="a.tflite", threshold=0.5),
        logging=LoggingConfig(level="INFO"),
    )
    new = Config(
        device=DeviceConfig(groups=("garage",)),
        model=ModelConfig(path="b.tflite", threshold=0.7),
        logging=LoggingConfig(level="DEBUG"),
        camera=(CameraConfig(source="rtsp://cam/other"),),
    )
    plan = plan_reload(running, new)
    assert plan.applied == ("model.threshold", "logging.level")
    assert plan.needs_restart == ("device.groups", "model.path", "camera")
    # What the status advertises is what the daemon follows: the old groups and model.
    assert plan.config.device.groups == ("lobby",)
    assert plan.config.model.path == "a.tflite"
    assert plan.config.camera == running.camera
    assert plan.config.model.threshold == 0.7
    assert plan.config.logging.level == "DEBUG"


def test_unchanged_file_applies_nothing():
    running = Config(model=ModelConfig(path="a.tflite"))
    plan = plan_reload(running, dataclasses.replace(running))
    assert plan.applied == () and plan.needs_restart == ()
    assert plan.config == running


def test_events_tracks_and_zones_are_named_as_needing_a_restart():
    """They were neither applied nor named: a SIGHUP changing them was silently ignored."""
    running = Config(model=ModelConfig(path="a.tflite"))
    new = dataclasses.replace(
        running,
        events=EventsConfig(labels=("person",)),
        track=(TrackConfig(label="car"),),
        zone=(ZoneConfig(name="door", camera="cam0", points=((0, 0), (1, 0), (1, 1))),),
    )
    plan = plan_reload(running, new)
    assert plan.applied == ()
    assert plan.needs_restart == ("events.labels", "track", "zone")
    assert (plan.config.events, plan.config.track, plan.config.zone) == (
        running.events,
        running.track,
        running.zone,
    )


def test_a_file_the_loader_chokes_on_keeps_the_running_config(tmp_path, monkeypatch, caplog):
    # Each parser failure that was no ConfigError (an OverflowError, Python's digit
    # limit) escaped the reload and killed the running daemon: whatever reading the
    # file raises, a reload keeps the running configuration.
    from edge_agent.daemon import reload as reload_module
    from edge_agent.daemon.signals import SignalQueue

    def choke(path):
        raise RuntimeError("a parser bug")

    monkeypatch.setattr(reload_module, "load_config", choke)
    assert reload_module.reread_config(str(tmp_path / "c.toml"), SignalQueue()) is None
    assert "reload: keeping the running configuration" in caplog.text
    assert "a parser bug" in caplog.text
