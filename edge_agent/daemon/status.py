"""The documents the daemon publishes on ``status`` (retained) and ``stats``.

Pure functions over snapshots of the components, so the payloads are testable without
a running daemon and the daemon module stays about wiring.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from edge_agent import __version__
from edge_agent.capture.health import CameraStats
from edge_agent.inference.switching import RunningModel


class DaemonState(enum.Enum):
    """The daemon's lifecycle, as the retained status reports it."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"  # after a clean exit
    FAILED = "failed"  # the daemon could not start


def camera_entry(stats: CameraStats, detail: str = "") -> dict[str, Any]:
    """One camera in the status document (its source has credentials masked)."""
    return {
        "state": stats.state,
        "detail": detail,
        "source": stats.source,
        "frames": stats.frames,
        "dropped": stats.dropped,
        "reconnects": stats.reconnects,
        "fps": round(stats.fps, 2),
        "last_error": stats.last_error,
        "frame_size": list(stats.frame_size) if stats.frame_size else None,
    }


def model_entry(gen: RunningModel | None) -> dict[str, Any]:
    """The running model: name and version (from the release or config), file, runtime."""
    info = gen.worker.info if gen else None
    return {
        "name": gen.meta.get("name", "") if gen else "",
        "version": gen.meta.get("version", "") if gen else "",
        "file": info.model_path if info else "",
        "runtime": info.runtime if info else "",
    }


def status_document(
    *,
    state: DaemonState,
    device_id: str,
    groups: Sequence[str],
    started: float,
    cameras: Sequence[CameraStats],
    details: Mapping[str, str],
    generation: RunningModel | None,
    broker_connected: bool,
    last_error: str,
    storage_error: str = "",
    mqtt_error: str = "",
    durability: Mapping[str, int] | None = None,
    broker: str = "",
    device_type: str = "",
) -> dict[str, Any]:
    """The retained status: daemon state, cameras, backend, model, errors.

    ``durability`` (the publisher's loss counters) adds ``possibly_lost_last_run`` (results
    the previous run may have lost to a power cut), ``spool_dropped``, ``lost`` (dropped
    from memory without a spool) and ``refused``.
    ``mqtt_error`` is the broker link's last problem (a refused publish, a discarded
    oversized packet); it stands in for ``last_error`` when nothing else is wrong.
    """
    return {
        **(durability or {}),  # first: the document's own keys win
        "state": state.value,
        "device_id": device_id,
        "groups": list(groups),
        "device_type": device_type,  # device.type: a rollout leaves out incompatible boxes
        "agent_version": __version__,
        "started": round(started, 3),
        "cameras": {c.name: camera_entry(c, details.get(c.name, "")) for c in cameras},
        "backend": generation.worker.info.backend if generation else None,
        "model": model_entry(generation),
        "broker_connected": broker_connected,
        "broker": broker,  # host:port of the broker connected to (mqtt.hosts failover)
        "storage_error": storage_error,  # e.g. the spool's disk is full
        "mqtt_error": mqtt_error,  # e.g. the broker's ACL refuses the results topic
        "last_error": last_error or storage_error or mqtt_error,
    }


def stats_document(
    snapshot: dict[str, Any],
    *,
    generation: RunningModel | None,
    cameras: Sequence[CameraStats],
    worker_restarts: int,
    mqtt: Mapping[str, Any],
    apex_temperatures: Mapping[str, float],
    model_dropped: int = 0,
) -> dict[str, Any]:
    """The periodic stats: the pipeline snapshot plus backend, model, drops, MQTT, TPU temp.

    ``model_dropped`` (frames the supervisor gave up on: the model failed on them, or
    they killed workers) is added to ``counters.errors``: those frames leave no result.
    """
    doc = dict(snapshot)
    if model_dropped and "counters" in doc:
        counters = doc["counters"] = dict(doc["counters"])
        counters["errors"] = counters.get("errors", 0) + model_dropped
    model = model_entry(generation)
    doc.update(
        {
            "backend": generation.worker.info.backend if generation else None,
            "model": model["name"],
            "model_version": model["version"],
            "dropped_frames": sum(c.dropped for c in cameras),
            "worker_restarts": worker_restarts,
            "mqtt": dict(mqtt),
        }
    )
    if apex_temperatures:
        doc["apex_temperature_c"] = dict(apex_temperatures)
    return doc
