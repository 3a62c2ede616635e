"""Cross-field rules: constraints that involve more than one value.

Per-field checks live on the schema (:mod:`edge_agent.config.schema`); what is here
needs two or more fields at once. Rules are pure: they raise :class:`Problem` for an
error, and :func:`warnings_for` lists things worth logging that do not stop the daemon.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any, Callable

from edge_agent.config.schema import (
    CameraConfig,
    Config,
    EventsConfig,
    InferenceConfig,
    ModelConfig,
    MqttConfig,
    UpdatesConfig,
)
from edge_agent.publishing.discovery import PREFIX_PATTERN
from edge_agent.publishing.endpoints import parse_endpoint
from edge_agent.publishing.topics import label_level
from edge_agent.tracking.events import PresenceCounts


class Problem(Exception):
    """A rule failed; ``key`` is the dotted key to blame (e.g. ``mqtt.key_file``)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def _num(value: float) -> str:
    """Format a number compactly for messages."""
    return f"{value:g}"


def _not_below(low: str, high: str) -> Callable[[Any, str], None]:
    """Rule: field ``high`` must be >= field ``low`` (backoff caps, mostly)."""

    def rule(section: Any, prefix: str) -> None:
        lo, hi = getattr(section, low), getattr(section, high)
        if hi < lo:
            raise Problem(
                f"{prefix}.{high}",
                f"expected number >= {prefix}.{low} ({_num(lo)}), got {_num(hi)}",
            )

    return rule


def _together(first: str, second: str) -> Callable[[Any, str], None]:
    """Rule: ``first`` and ``second`` are both set or both unset."""

    def rule(section: Any, prefix: str) -> None:
        a, b = getattr(section, first), getattr(section, second)
        if _is_set(a) and not _is_set(b):
            raise Problem(f"{prefix}.{second}", f"required when {prefix}.{first} is set")
        if _is_set(b) and not _is_set(a):
            raise Problem(f"{prefix}.{first}", f"required when {prefix}.{second} is set")

    return rule


def _is_set(value: Any) -> bool:
    """A value counts as set unless it is None or empty."""
    return value is not None and value != "" and value != ()


def _every_frame_contradicts_off(section: MqttConfig, prefix: str) -> None:
    """``publish_every_frame = true`` (the older spelling of "all") with results off."""
    if section.publish_every_frame and section.publish_results == "off":
        raise Problem(
            f"{prefix}.publish_every_frame",
            'true contradicts publish_results = "off"; use publish_results alone',
        )


def _tls_options_need_tls(section: MqttConfig, prefix: str) -> None:
    """TLS options with ``tls = false`` would silently connect in plain text."""
    if section.tls:
        return
    for name in ("ca_file", "cert_file", "key_file", "tls_insecure"):
        if getattr(section, name):
            raise Problem(f"{prefix}.{name}", f"requires {prefix}.tls = true")


def _host_or_hosts(section: MqttConfig, prefix: str) -> None:
    """``host`` and ``hosts`` both set: which broker comes first would be a guess."""
    if section.hosts and section.host != "localhost":
        raise Problem(f"{prefix}.host", f"set {prefix}.hosts or {prefix}.host, not both")


def _discovery_prefix_takes_ids(section: MqttConfig, prefix: str) -> None:
    """Discovery topics are made of Home Assistant ids: a topic prefix such as
    ``home.assistant`` would only be refused once the daemon started."""
    if section.homeassistant and not PREFIX_PATTERN.match(section.discovery_prefix):
        raise Problem(
            f"{prefix}.discovery_prefix",
            "expected levels of [A-Za-z0-9_-] separated by '/', "
            f'got "{section.discovery_prefix}"',
        )


def _polling_needs_manifest(section: UpdatesConfig, prefix: str) -> None:
    """Polling without a manifest URL has nothing to poll."""
    if section.poll_interval > 0 and not section.manifest_url:
        raise Problem(f"{prefix}.manifest_url", f"required when {prefix}.poll_interval > 0")


def _http_needs_allow_http(section: UpdatesConfig, prefix: str) -> None:
    """A plain-http manifest contradicts ``allow_http = false``."""
    if section.manifest_url.startswith("http://") and not section.allow_http:
        raise Problem(f"{prefix}.manifest_url", f"http:// URL requires {prefix}.allow_http = true")


def _disk_needs_snapshots(section: EventsConfig, prefix: str) -> None:
    """Keeping snapshots on disk with snapshots off would silently keep nothing."""
    if section.snapshot_keep_on_disk and not section.snapshots:
        raise Problem(f"{prefix}.snapshot_keep_on_disk", f"requires {prefix}.snapshots = true")


def _fit_or_size(section: CameraConfig, prefix: str) -> None:
    """A mode sized to the model cannot be asked for with a size, or with a reduced decode."""
    if section.fit_model and (section.width or section.height):
        raise Problem(
            f"{prefix}.fit_model",
            f"sizes the device's mode to the model: remove {prefix}.width and "
            f"{prefix}.height, or set fit_model = false",
        )
    if section.fit_model and section.decode_scale > 1:
        raise Problem(
            f"{prefix}.decode_scale",
            f"{prefix}.fit_model sizes a device's mode to the model, decode_scale applies "
            "to MJPG files and streams: set one of them",
        )


RULES: dict[type, tuple[Callable[[Any, str], None], ...]] = {
    CameraConfig: (_not_below("reopen_initial", "reopen_max"), _fit_or_size),
    ModelConfig: (_together("input_mean", "input_std"),),
    InferenceConfig: (_not_below("reprobe_initial", "reprobe_max"),),
    MqttConfig: (
        _not_below("reconnect_min", "reconnect_max"),
        _every_frame_contradicts_off,
        _together("cert_file", "key_file"),
        _tls_options_need_tls,
        _host_or_hosts,
        _discovery_prefix_takes_ids,
    ),
    UpdatesConfig: (
        _polling_needs_manifest,
        _http_needs_allow_http,
        _not_below("download_timeout", "attempt_timeout"),
        _not_below("attempt_timeout", "update_timeout"),
    ),
    EventsConfig: (_disk_needs_snapshots,),
}


def check_section(section: Any, prefix: str) -> None:
    """Run the rules for one section (``prefix`` is its dotted key, e.g. ``camera[1]``).

    Raises:
        Problem: the first rule that fails.
    """
    for rule in RULES.get(type(section), ()):
        rule(section, prefix)


def check_cameras(cameras: Sequence[CameraConfig]) -> None:
    """Camera names must be unique: they are MQTT topic levels and entity ids.

    Raises:
        Problem: naming the second camera that uses a name.
    """
    seen: dict[str, int] = {}
    for index, camera in enumerate(cameras):
        if camera.name in seen:
            raise Problem(
                f"camera[{index}].name",
                f'duplicate camera name "{camera.name}" (also camera[{seen[camera.name]}].name)',
            )
        seen[camera.name] = index


# Levels under {prefix}/{device_id}/ that counts of a camera or zone must not shadow.
RESERVED_PLACES = frozenset({"cmd", "available", "results", "stats", "status", "model", "events"})


def check_objects(config: Config) -> None:
    """Zones name a camera, and cameras and zones have distinct, unreserved names (each
    is the topic level of its counts); ``[[track]]`` labels are unique.

    Raises:
        Problem: naming the first offending key.
    """
    cameras = {camera.name for camera in config.camera}
    fitted = {camera.name for camera in config.camera if camera.fit_model}
    for index, camera in enumerate(config.camera):
        if camera.name in RESERVED_PLACES:
            raise Problem(f"camera[{index}].name", f'"{camera.name}" is a reserved topic level')
    seen: dict[str, int] = {}
    for index, zone in enumerate(config.zone):
        key = f"zone[{index}]"
        if zone.camera not in cameras:
            known = ", ".join(sorted(cameras))
            raise Problem(f"{key}.camera", f'no camera named "{zone.camera}" (cameras: {known})')
        if zone.name in cameras or zone.name in RESERVED_PLACES:
            raise Problem(
                f"{key}.name", f'"{zone.name}" is a camera name or a reserved topic level'
            )
        if zone.name in seen:
            raise Problem(f"{key}.name", f"duplicate zone name (also zone[{seen[zone.name]}])")
        if zone.camera in fitted and not all(0 <= v <= 1 for point in zone.points for v in point):
            raise Problem(
                f"{key}.points",
                f'camera "{zone.camera}" has fit_model = true, so its frame size follows the '
                "model: give the points in 0..1 of the frame",
            )
        seen[zone.name] = index
    check_event_labels(config.events.labels)
    labels: dict[str, int] = {}
    for index, track in enumerate(config.track):
        if track.label in labels:
            raise Problem(
                f"track[{index}].label", f"duplicate label (also track[{labels[track.label]}])"
            )
        labels[track.label] = index


def check_event_labels(labels: Sequence[str]) -> None:
    """Each of ``events.labels`` gets a count topic level of its own (``.../{camera}/{level}``)
    and Home Assistant entities: "all" (every label's count) and two labels of one level
    (``a/b`` and ``a_b``) would share them.

    Raises:
        Problem: naming the first label that shares its level.
    """
    every = PresenceCounts.ALL  # the count of every label: ``.../{camera}/all``
    levels = {label_level(every): every}
    for label in labels:
        level = label_level(label)
        if label == every:
            raise Problem("events.labels", f'"{label}" is the count of every label')
        if level in levels:  # the schema refuses a label listed twice
            raise Problem(
                "events.labels",
                f'"{levels[level]}" and "{label}" share the count topic level "{level}"',
            )
        levels[level] = label


def _is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (no lookup: validation does no I/O)."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warnings_for(config: Config) -> list[tuple[str, str]]:
    """List ``(dotted key, message)`` warnings that a pure look at ``config`` finds."""
    found: list[tuple[str, str]] = []
    if not config.enabled_cameras:
        found.append(("camera", "every camera has enabled = false; nothing will be captured"))
    for index, camera in enumerate(config.camera):
        device = isinstance(camera.source, int) or camera.source.strip().startswith("/dev/")
        if camera.fit_model and not device:
            found.append(
                (f"camera[{index}].fit_model", "applies to V4L2 devices; this source is not one")
            )
    mqtt = config.mqtt
    brokers = [parse_endpoint(h).host for h in mqtt.hosts] or [mqtt.host]
    remote = [h for h in brokers if not _is_loopback(h)]
    if mqtt.enabled and mqtt.password and not mqtt.tls and remote:
        found.append(
            (
                "mqtt.password",
                f'sent in clear text to "{remote[0]}" because mqtt.tls = false',
            )
        )
    return found
