"""The config's sections as the settings each component takes (model, MQTT, discovery)."""

from __future__ import annotations

import socket

from edge_agent.config import Config
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.publishing.client import MqttSettings
from edge_agent.publishing.discovery_objects import ObjectLayout


def device_id(config: Config) -> str:
    """The box's name in topics and Home Assistant: ``device.id``, else the short hostname."""
    return config.device.id or socket.gethostname().split(".")[0]


def model_options(config: Config) -> ModelOptions:
    """The ``[model]`` and ``[inference]`` sections as ModelOptions."""
    m = config.model
    return ModelOptions(
        path=m.path,
        cpu_model=m.cpu_model,
        labels=m.labels,
        device=m.device,
        num_threads=m.num_threads,
        task=m.task,
        resize=m.resize,
        input_mean=m.input_mean,
        input_std=m.input_std,
        settings=DecodeSettings(m.threshold, m.top_k, m.iou, m.max_detections),
        labels_filter=m.labels_filter,
        warmup=config.inference.warmup,
        edgetpu_library=m.edgetpu_library,
    )


def mqtt_settings(config: Config) -> MqttSettings:
    """The ``[mqtt]`` section as the publisher's settings."""
    q = config.mqtt
    return MqttSettings(
        host=q.host,
        port=q.port,
        hosts=q.hosts,
        transport=q.transport,
        client_id=q.client_id,
        username=q.username or None,
        password=q.password or None,
        keepalive=q.keepalive,
        tls=q.tls,
        ca_file=q.ca_file or None,
        cert_file=q.cert_file or None,
        key_file=q.key_file or None,
        tls_insecure=q.tls_insecure,
        reconnect_min=q.reconnect_min,
        reconnect_max=q.reconnect_max,
        spool_max_bytes=int(q.spool_max_mb * 1024 * 1024),
        max_unacked_s=q.max_unacked_s,
        protocol=q.protocol,
        max_packet_size=q.max_packet_size,
        qos_results=q.qos_results,
        qos_stats=q.qos_stats,
        retain_status=q.retain_status,
    )


def object_layout(config: Config, *, events: bool) -> ObjectLayout:
    """The cameras, zones and labels Home Assistant gets entities for (a disabled
    camera's zones count nothing: they get none)."""
    cameras = [c.name for c in config.enabled_cameras]
    return ObjectLayout(
        cameras,
        [z.name for z in config.zone if z.camera in cameras],
        config.events.labels,
        events=events,
        snapshots=events and config.events.snapshots,
        zone_cameras={z.name: z.camera for z in config.zone if z.camera in cameras},
    )
