"""The configuration schema: frozen dataclasses whose fields carry their own checks.

Every field is declared once, with its default and the check that validates it
(``opt(default, check)``); the loader walks these declarations, so adding a setting is
a one-line change here. Cross-field rules live in :mod:`edge_agent.config.rules`.

Arrays are stored as tuples so a :class:`Config` is immutable and hashable; use
``dataclasses.replace`` to derive a modified copy (it does not re-validate).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from edge_agent.config.checks import (
    Bool,
    BrokerList,
    Check,
    Int,
    ListOf,
    Megabytes,
    Num,
    OneOf,
    Pattern,
    PollInterval,
    Seconds,
    Text,
    TopicLevel,
    TopicPrefix,
)
from edge_agent.config.url_checks import CameraSource, HttpUrl
from edge_agent.redaction import mask_credentials

# Path kinds a field can carry; the loader resolves relative paths of these kinds
# against the config file's directory.
PATH = "path"  # one path, "" = unset
PATHS = "paths"  # an array of paths
SOURCE = "source"  # a camera source: resolved only when it is a file path


def opt(default: Any, check: Check, *, path: str = "", required: bool = False) -> Any:
    """Declare a config field: default, check, path kind, and whether files must set it.

    A ``required`` field's default only serves Configs built in code.
    """
    meta = {"check": check, "path": path, "required": required}
    return field(default=default, metadata=meta)


STRINGS = ListOf(Text(nonempty=True), "array of non-empty strings", unique=True)


@dataclass(frozen=True)
class DeviceConfig:
    """``[device]``: identity of this box and where it keeps state."""

    id: str = opt("", TopicLevel(allow_empty=True))
    groups: tuple[str, ...] = opt(
        (),
        ListOf(
            TopicLevel(),
            "array of non-empty strings without '/', '+', '#', other than '.' and '..'",
            unique=True,
        ),
    )
    state_dir: str = opt("/var/lib/edge-agent", Text(nonempty=True), path=PATH)
    type: str = opt("", TopicLevel(allow_empty=True))


@dataclass(frozen=True)
class CameraConfig:
    """One ``[[camera]]`` table."""

    name: str = opt("cam0", TopicLevel())
    source: Union[int, str] = opt(0, CameraSource(), path=SOURCE, required=True)
    width: int = opt(0, Int(0, 16384))
    height: int = opt(0, Int(0, 16384))
    fps: float = opt(0.0, Num(lo=0))
    loop: bool = opt(True, Bool())
    reopen_initial: float = opt(0.5, Seconds(gt=0))
    reopen_max: float = opt(30.0, Seconds(gt=0))
    stale_after: float = opt(5.0, Seconds(gt=0))
    enabled: bool = opt(True, Bool())
    # False: a file source is read losslessly, as fast as the pipeline takes frames.
    realtime: bool = opt(True, Bool())
    # Decode MJPG at 1/N scale (capture/mjpeg.py): the camera acts as a smaller one.
    decode_scale: int = opt(1, OneOf(1, 2, 4, 8))
    # A V4L2 device without width/height is asked for its smallest mode that covers the
    # model input (capture/v4l2.py): cheaper decode and resize; frame pixels change.
    fit_model: bool = opt(False, Bool())
    # Motion gating (capture/motion.py): frames in which nothing moved skip the model.
    motion_gate: bool = opt(False, Bool())
    motion_threshold: float = opt(0.002, Num(gt=0, hi=1))
    motion_pixel_delta: int = opt(25, Int(1, 254))
    motion_max_idle: float = opt(10.0, Seconds(gt=0))


VECTOR = "array of 1 or 3 numbers"
POINTS = ListOf(
    ListOf(Num(), "[x, y]", sizes=(2,)),
    "array of at least 3 [x, y] points",
    sizes=range(3, 1001),
)


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: which model to run and how to read its output."""

    path: str = opt("", Text(), path=PATH)
    cpu_model: str = opt("", Text(), path=PATH)
    labels: str = opt("", Text(), path=PATH)
    name: str = opt("", Text())
    version: str = opt("", Text())
    task: str = opt("auto", OneOf("auto", "classification", "detection-ssd", "detection-yolo"))
    device: str = opt(
        "auto",
        Pattern(
            r"auto|cpu|usb(:[0-9]+)?|pci(:[0-9]+)?",
            '"auto", "cpu", "usb", "usb:N", "pci" or "pci:N"',
        ),
    )
    num_threads: int = opt(0, Int(0, 256))
    threshold: float = opt(0.5, Num(0, 1))
    top_k: int = opt(5, Int(0))
    iou: float = opt(0.45, Num(0, 1))
    max_detections: int = opt(100, Int(1, 1000))
    resize: str = opt("auto", OneOf("auto", "stretch", "letterbox"))
    input_mean: Optional[tuple[float, ...]] = opt(None, ListOf(Num(), VECTOR, sizes=(1, 3)))
    input_std: Optional[tuple[float, ...]] = opt(None, ListOf(Num(gt=0), VECTOR, sizes=(1, 3)))
    labels_filter: tuple[str, ...] = opt((), STRINGS)
    edgetpu_library: str = opt(
        "", Pattern(r"(/.+|[^/]+)?", "an absolute path or a library file name (no '/')")
    )


@dataclass(frozen=True)
class InferenceConfig:
    """``[inference]``: worker supervision and accelerator re-probing."""

    deadline: float = opt(5.0, Seconds(gt=0))
    reprobe_initial: float = opt(5.0, Seconds(gt=0))
    reprobe_max: float = opt(300.0, Seconds(gt=0))
    warmup: bool = opt(True, Bool())
    load_timeout: float = opt(60.0, Seconds(gt=0))


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]``: broker connection, topics, spool and Home Assistant discovery."""

    enabled: bool = opt(True, Bool())
    host: str = opt("localhost", Text(nonempty=True))
    port: int = opt(1883, Int(1, 65535))
    # Brokers in failover order ("mq1:8883", "[::1]:1883"); when set, replaces host and
    # port (port stays the default for an entry without one).
    hosts: tuple[str, ...] = opt((), BrokerList())
    transport: str = opt("tcp", OneOf("tcp", "websockets"))
    client_id: str = opt("", Text())
    username: str = opt("", Text())
    password: str = opt("", Text(secret=True))
    keepalive: int = opt(30, Int(5, 3600))
    prefix: str = opt("edge-agent", TopicPrefix())
    qos_results: int = opt(1, Int(0, 2))
    qos_stats: int = opt(0, Int(0, 2))
    retain_status: bool = opt(True, Bool())
    publish_every_frame: bool = opt(False, Bool())
    publish_results: str = opt("detections", OneOf("all", "detections", "off"))
    tls: bool = opt(False, Bool())
    ca_file: str = opt("", Text(), path=PATH)
    cert_file: str = opt("", Text(), path=PATH)
    key_file: str = opt("", Text(), path=PATH)
    tls_insecure: bool = opt(False, Bool())
    reconnect_min: float = opt(1.0, Seconds(gt=0))
    reconnect_max: float = opt(30.0, Seconds(gt=0))
    spool_max_mb: float = opt(50.0, Megabytes())
    # Longest a result is held only in memory: unacknowledged for half of it, it is spooled.
    max_unacked_s: float = opt(2.0, Num(lo=0.2, hi=60))
    # MQTT 5 (declares max_packet_size to the broker), 3.1.1, or auto (5, else 3.1.1).
    protocol: str = opt("auto", OneOf("auto", "5", "3.1.1"))
    max_packet_size: int = opt(1048576, Int(1024, 268435455))
    # "" means {device.state_dir}/spool; the loader fills it in.
    spool_dir: str = opt("", Text(), path=PATH)
    ready_without_broker: bool = opt(True, Bool())
    homeassistant: bool = opt(True, Bool())
    discovery_prefix: str = opt("homeassistant", TopicPrefix())

    @property
    def results_mode(self) -> str:
        """Which frames go to ``results``: ``publish_every_frame`` means "all"."""
        return "all" if self.publish_every_frame else self.publish_results


@dataclass(frozen=True)
class StatsConfig:
    """``[stats]``: how often the stats message is published."""

    interval: float = opt(10.0, Seconds(lo=1))


@dataclass(frozen=True)
class UpdatesConfig:
    """``[updates]``: signed over-the-air model updates."""

    enabled: bool = opt(True, Bool())
    trusted_keys: tuple[str, ...] = opt((), STRINGS, path=PATHS)
    allow_http: bool = opt(False, Bool())
    allowed_hosts: tuple[str, ...] = opt((), STRINGS)
    max_size_mb: float = opt(200.0, Megabytes())
    keep_versions: int = opt(3, Int(1, 20))
    manifest_url: str = opt("", HttpUrl())
    poll_interval: float = opt(0.0, PollInterval())
    download_timeout: float = opt(30.0, Seconds(gt=0))
    retries: int = opt(5, Int(0, 20))
    attempt_timeout: float = opt(900.0, Seconds(gt=0))
    update_timeout: float = opt(3600.0, Seconds(gt=0))
    min_rate_bytes: int = opt(1024, Int(0))
    min_rate_window: float = opt(60.0, Seconds(lo=1))
    health_frames: int = opt(20, Int(0))
    force_allowed: bool = opt(False, Bool())
    queue_depth: int = opt(8, Int(1, 256))
    allow_model_change: bool = opt(False, Bool())


@dataclass(frozen=True)
class EventsConfig:
    """``[events]``: objects tracked across frames, their events and per-label counts."""

    enabled: bool = opt(True, Bool())
    update_interval: float = opt(5.0, Seconds(gt=0))
    min_hits: int = opt(2, Int(1, 1000))
    max_age: float = opt(1.0, Seconds(gt=0))
    match_iou: float = opt(0.3, Num(0.01, 1))
    predict: bool = opt(True, Bool())
    labels: tuple[str, ...] = opt((), STRINGS)
    snapshots: bool = opt(True, Bool())
    snapshot_crop: bool = opt(False, Bool())
    snapshot_width: int = opt(640, Int(64, 8192))
    snapshot_quality: int = opt(80, Int(1, 100))
    snapshot_keep_on_disk: bool = opt(False, Bool())
    snapshot_max_disk_mb: float = opt(100.0, Megabytes())


@dataclass(frozen=True)
class TrackConfig:
    """One ``[[track]]`` table: when tracks of one label start and end."""

    label: str = opt("", Text(nonempty=True), required=True)
    min_hits: int = opt(2, Int(1, 1000))
    max_age: float = opt(1.0, Seconds(gt=0))


@dataclass(frozen=True)
class ZoneConfig:
    """One ``[[zone]]`` table: a polygon of one camera's view."""

    name: str = opt("", TopicLevel(), required=True)
    camera: str = opt("", Text(nonempty=True), required=True)
    points: tuple[tuple[float, float], ...] = opt((), POINTS, required=True)
    labels: tuple[str, ...] = opt((), STRINGS)
    min_frames: int = opt(1, Int(1, 1000))
    anchor: str = opt("bottom_center", OneOf("bottom_center", "center", "top_center"))


@dataclass(frozen=True)
class LoggingConfig:
    """``[logging]``: log level (any case accepted, stored upper-case)."""

    level: str = opt("INFO", OneOf("DEBUG", "INFO", "WARNING", "ERROR", fold_case=True))


# Top-level layout of the file: plain tables, and arrays of tables.
SECTIONS: dict[str, type] = {
    "device": DeviceConfig,
    "model": ModelConfig,
    "inference": InferenceConfig,
    "mqtt": MqttConfig,
    "stats": StatsConfig,
    "updates": UpdatesConfig,
    "events": EventsConfig,
    "logging": LoggingConfig,
}
ARRAYS: dict[str, type] = {"camera": CameraConfig, "track": TrackConfig, "zone": ZoneConfig}
# The order sections are validated in, so the first error reported is predictable.
ORDER = (
    "device",
    "camera",
    "model",
    "inference",
    "mqtt",
    "stats",
    "updates",
    "events",
    "track",
    "zone",
    "logging",
)

# Values masked by Config.redacted_dict().
SECRETS = (("mqtt", "password"),)
MASK = "***"


@dataclass(frozen=True)
class Config:
    """The whole validated configuration.

    Attribute paths mirror the TOML keys: ``config.mqtt.port`` is ``mqtt.port`` and
    ``config.camera[1].fps`` is the second ``[[camera]]`` table's ``fps``.

    Attributes:
        source: the file the config was read from ("" when built in code).
        warnings: problems that do not stop the daemon (e.g. a secret in a file
            other users can read); the caller logs them.
    """

    device: DeviceConfig = field(default_factory=DeviceConfig)
    camera: tuple[CameraConfig, ...] = field(default_factory=lambda: (CameraConfig(),))
    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    updates: UpdatesConfig = field(default_factory=UpdatesConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    track: tuple[TrackConfig, ...] = ()
    zone: tuple[ZoneConfig, ...] = ()
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def cameras(self) -> tuple[CameraConfig, ...]:
        """Alias of :attr:`camera` for code that reads better in the plural."""
        return self.camera

    @property
    def spool_dir(self) -> str:
        """The MQTT spool directory: ``mqtt.spool_dir``, else ``{device.state_dir}/spool``.

        ``load_config`` already fills ``mqtt.spool_dir`` in; this also covers a Config
        built in code.
        """
        return self.mqtt.spool_dir or os.path.join(self.device.state_dir, "spool")

    @property
    def enabled_cameras(self) -> tuple[CameraConfig, ...]:
        """The cameras with ``enabled = true``, in file order."""
        return tuple(cam for cam in self.camera if cam.enabled)

    def redacted_dict(self) -> dict[str, Any]:
        """Return the settings as plain JSON-ready data with secrets masked.

        Returns:
            ``{"device": {...}, "camera": [{...}, ...], ...}`` with tuples turned into
            lists, ``mqtt.password`` replaced by ``"***"`` when set, and passwords in
            ``scheme://user:password@host`` URLs masked. ``source`` and ``warnings``
            are not included.
        """
        out: dict[str, Any] = {}
        for name in ORDER:
            value = getattr(self, name)
            if isinstance(value, tuple):
                out[name] = [_plain(item) for item in value]
            else:
                out[name] = _plain(value)
        for section, key in SECRETS:
            if out[section][key]:
                out[section][key] = MASK
        return out


def _plain(section: Any) -> dict[str, Any]:
    """One section as a dict of JSON types, URL credentials masked."""
    out: dict[str, Any] = {}
    for spec in dataclasses.fields(section):
        value = getattr(section, spec.name)
        if isinstance(value, tuple):
            value = [mask_credentials(v) if isinstance(v, str) else v for v in value]
        elif isinstance(value, str):
            value = mask_credentials(value)
        out[spec.name] = value
    return out
