"""Home Assistant's reading of discovery configs: templates and availability."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest


def render(template: str, payload: str) -> str:
    """Render a discovery template as Home Assistant's MQTT integration does: Jinja with
    ``value`` (the payload text) and ``value_json`` (the parsed payload)."""
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(undefined=jinja2.Undefined)
    try:
        value_json = json.loads(payload)
    except ValueError:
        value_json = None
    return env.from_string(template).render(value=payload, value_json=value_json)


def available(config: Mapping[str, Any], payloads: Mapping[str, str]) -> bool:
    """Whether Home Assistant shows the entity available, given the last payload of each
    availability topic (``availability_mode`` "all": every entry must read available;
    "latest", the default: here, the last entry)."""
    verdicts = []
    for entry in config["availability"]:
        payload = payloads[entry["topic"]]
        if "value_template" in entry:
            payload = render(entry["value_template"], payload)
        verdicts.append(payload == entry.get("payload_available", "online"))
    return all(verdicts) if config.get("availability_mode") == "all" else verdicts[-1]
