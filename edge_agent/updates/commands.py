"""Model update commands: MQTT topics and strict parsing of their JSON payloads.

Topics (``prefix`` is the configured topic prefix)::

    {prefix}/{device_id}/cmd/model/update       {prefix}/group/{group}/cmd/model/update
    {prefix}/{device_id}/cmd/model/rollback     {prefix}/group/{group}/cmd/model/rollback
    {prefix}/{device_id}/model                  retained state published by the device

Update payload (at most 256 KiB)::

    {"request_id": "rollout-42",                 optional, [A-Za-z0-9._:-]{1,64}
     "manifest": {...signed envelope...},        or "manifest_url": "https://..."
     "base_url": "https://host/releases/x/1.2.3/",   optional
     "urls": {"model_edgetpu.tflite": "https://..."}, optional, per file
     "force": false}                             re-install/downgrade; needs allow_force

A file's URL is ``urls[name]``, else ``base_url`` + name, else the manifest URL's
directory + name. Rollback payload: ``{"request_id": "..."}`` or empty.

The ``request_id`` makes a command idempotent (see ``requests.py``): the same command
sent again is not run again; its final state is published again under that id.

Parsing is pure and raises only :class:`ModelUpdateError` (``bad_command``,
``bad_manifest``, ``insecure_url``, ``host_not_allowed``, ``bad_url``...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent.errors import ModelUpdateError
from edge_agent.updates.manifest import parse_manifest, validate_file_name
from edge_agent.updates.signing import parse_envelope
from edge_agent.updates.strictjson import loads_json
from edge_agent.updates.urls import check_url, file_url

MAX_COMMAND_BYTES = 256 * 1024
UPDATE = "update"
ROLLBACK = "rollback"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_TOPIC_LEVEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_UPDATE_KEYS = {"request_id", "manifest", "manifest_url", "base_url", "urls", "force"}


@dataclass(frozen=True)
class CommandPolicy:
    """What this device accepts in commands (from the ``[updates]`` config).

    Attributes:
        allowed_hosts: hosts URLs may point at (empty: any).
        allow_http: accept plain-http URLs.
        allow_force: accept ``"force": true`` (re-install, downgrade).
    """

    allowed_hosts: tuple[str, ...] = ()
    allow_http: bool = False
    allow_force: bool = False


@dataclass(frozen=True)
class UpdateCommand:
    """A validated update command; exactly one of ``envelope``/``manifest_url`` is set."""

    request_id: str | None = None
    envelope: Mapping[str, Any] | None = None
    manifest_url: str | None = None
    base_url: str | None = None
    urls: Mapping[str, str] = field(default_factory=dict)
    force: bool = False

    def url_for(self, name: str) -> str:
        """The URL of a release file.

        Raises:
            ModelUpdateError: ``bad_command`` when no URL source covers the file.
        """
        return file_url(
            name, urls=self.urls, base_url=self.base_url, manifest_url=self.manifest_url
        )


@dataclass(frozen=True)
class RollbackCommand:
    """A validated rollback command."""

    request_id: str | None = None


def _bad(message: str) -> ModelUpdateError:
    """A ``bad_command`` rejection."""
    return ModelUpdateError("bad_command", message)


def _object(payload: bytes | bytearray | str, what: str) -> dict[str, Any]:
    """Parse a payload into a JSON object within the command limits."""
    obj = loads_json(payload, max_bytes=MAX_COMMAND_BYTES, reason="bad_command", what=what)
    if not isinstance(obj, dict):
        raise _bad(f"{what} must be a JSON object")
    return obj


def _request_id(obj: Mapping[str, Any]) -> str | None:
    """The optional request id, checked (it is echoed on the state topic)."""
    rid = obj.get("request_id")
    if rid is None:
        return None
    if not isinstance(rid, str) or not _REQUEST_ID.fullmatch(rid):
        raise _bad("request_id must match [A-Za-z0-9._:-]{1,64}")
    return rid


def _url(value: Any, key: str, policy: CommandPolicy) -> str:
    """A URL field checked against the policy (insecure_url, host_not_allowed...)."""
    if not isinstance(value, str):
        raise _bad(f"{key} must be a string URL")
    check_url(value, allowed_hosts=policy.allowed_hosts, allow_http=policy.allow_http)
    return value


def peek_request_id(payload: Any) -> str | None:
    """The request id of a raw command payload, even one that fails to parse.

    A refused command must still be reported under its request id, or the operator
    waiting for that id never sees the refusal. Never raises.

    Returns:
        A well-formed ``request_id``, else None.
    """
    if not isinstance(payload, (bytes, bytearray, str)):
        return getattr(payload, "request_id", None)
    try:
        return _request_id(_object(payload, "command"))
    except ModelUpdateError:
        return None


def parse_update_command(
    payload: bytes | bytearray | str, policy: CommandPolicy | None = None
) -> UpdateCommand:
    """Parse and validate an update command payload.

    Args:
        payload: the raw MQTT payload.
        policy: this device's limits (default: https only, any host, no force).

    Returns:
        The UpdateCommand.

    Raises:
        ModelUpdateError: ``bad_command`` for structural problems; ``bad_manifest``
            for an invalid inline manifest; URL reasons for rejected URLs.
    """
    policy = policy or CommandPolicy()
    obj = _object(payload, "update command")
    unknown = set(obj) - _UPDATE_KEYS
    if unknown:
        # Key names are attacker text: quote a few, shortened, never the whole payload.
        shown = [k[:40] for k in sorted(unknown)[:5]]
        raise _bad(f"unknown keys {shown}; allowed: {sorted(_UPDATE_KEYS)}")
    request_id = _request_id(obj)
    force = obj.get("force", False)
    if not isinstance(force, bool):
        raise _bad("force must be true or false")
    if force and not policy.allow_force:
        raise _bad("force is disabled on this device (updates.allow_force = false)")
    if ("manifest" in obj) == ("manifest_url" in obj):
        raise _bad("give exactly one of manifest (inline envelope) or manifest_url")
    envelope = manifest = manifest_url = None
    if "manifest" in obj:
        envelope = obj["manifest"]
        if not isinstance(envelope, dict):
            raise _bad("manifest must be a JSON object (the signed envelope)")
        manifest = parse_manifest(parse_envelope(envelope).manifest)
    else:
        manifest_url = _url(obj["manifest_url"], "manifest_url", policy)
    base_url = None if obj.get("base_url") is None else _url(obj["base_url"], "base_url", policy)
    urls = obj.get("urls", {})
    if not isinstance(urls, dict) or len(urls) > 8:
        raise _bad("urls must be an object of at most 8 {file name: URL}")
    for name, url in urls.items():
        validate_file_name(name, reason="bad_command")
        _url(url, f"urls[{name}]", policy)
    if manifest is not None:
        names = {f.name for f in manifest.files}
        extra = set(urls) - names
        if extra:
            raise _bad(f"urls names files not in the manifest: {sorted(extra)}")
        if base_url is None and names - set(urls):
            raise _bad(f"no URL for {sorted(names - set(urls))}: give base_url or urls")
    return UpdateCommand(request_id, envelope, manifest_url, base_url, dict(urls), force)


def parse_rollback_command(payload: bytes | bytearray | str) -> RollbackCommand:
    """Parse a rollback payload (empty, or ``{"request_id": ...}``).

    Raises:
        ModelUpdateError: ``bad_command``.
    """
    if isinstance(payload, (bytes, bytearray, str)) and not payload.strip():
        return RollbackCommand()
    obj = _object(payload, "rollback command")
    if set(obj) - {"request_id"}:
        raise _bad('rollback takes only {"request_id": ...}')
    return RollbackCommand(_request_id(obj))


def build_update_command(
    *,
    envelope: Mapping[str, Any] | None = None,
    manifest_url: str | None = None,
    base_url: str | None = None,
    urls: Mapping[str, str] | None = None,
    request_id: str | None = None,
    force: bool = False,
) -> bytes:
    """Serialize an update command (the operator side of :func:`parse_update_command`)."""
    obj: dict[str, Any] = {}
    if request_id is not None:
        obj["request_id"] = request_id
    if envelope is not None:
        obj["manifest"] = dict(envelope)
    if manifest_url is not None:
        obj["manifest_url"] = manifest_url
    if base_url is not None:
        obj["base_url"] = base_url
    if urls:
        obj["urls"] = dict(urls)
    if force:
        obj["force"] = True
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -------------------------------------------------------------------------- topics


def check_topic_level(value: str, what: str) -> str:
    """Check a device id or group name is one safe topic level.

    Raises:
        ValueError: when it is empty, too long, holds ``/ + #`` or other characters.
    """
    if not isinstance(value, str) or not _TOPIC_LEVEL.fullmatch(value) or value == "group":
        raise ValueError(f"{what} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}} (not 'group')")
    return value


def device_command_topic(prefix: str, device_id: str, kind: str) -> str:
    """``{prefix}/{device_id}/cmd/model/{kind}``."""
    return f"{prefix}/{device_id}/cmd/model/{kind}"


def group_command_topic(prefix: str, group: str, kind: str) -> str:
    """``{prefix}/group/{group}/cmd/model/{kind}``."""
    return f"{prefix}/group/{group}/cmd/model/{kind}"


def state_topic(prefix: str, device_id: str) -> str:
    """``{prefix}/{device_id}/model``: the retained update state."""
    return f"{prefix}/{device_id}/model"


def command_kind(topic: str) -> str | None:
    """``update``/``rollback`` for a model command topic, else None."""
    head, _, kind = topic.rpartition("/")
    return kind if head.endswith("/cmd/model") and kind in (UPDATE, ROLLBACK) else None
