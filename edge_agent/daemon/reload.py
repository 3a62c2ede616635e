"""What a SIGHUP reload may change in a running daemon, decided as a pure function.

A reload applies live only what the running daemon can honour at once: the log level,
the decoding thresholds and the stats interval. Anything else that changed (cameras,
broker, groups, model file, ...) is named in one log line and *kept at its running
value*, so the status never advertises a setting (e.g. new groups) that the running
daemon does not follow (e.g. its subscriptions).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import NamedTuple

from edge_agent.config import Config, load_config
from edge_agent.daemon.preflight import filter_warnings
from edge_agent.daemon.signals import SignalQueue
from edge_agent.errors import EdgeAgentError, StopRequested
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.inference.supervisor import Supervisor
from edge_agent.inference.switching import RunningModel

logger = logging.getLogger(__name__)

# (section, key) pairs a reload applies without a restart.
LIVE_KEYS = frozenset(
    {
        ("logging", "level"),
        ("model", "threshold"),
        ("model", "top_k"),
        ("model", "iou"),
        ("model", "max_detections"),
        ("model", "labels_filter"),
        ("stats", "interval"),
    }
)
_SECTIONS = ("device", "model", "inference", "mqtt", "stats", "updates", "events", "logging")
_TABLE_ARRAYS = ("camera", "track", "zone")  # [[camera]], [[track]], [[zone]]: as a whole


class ReloadPlan(NamedTuple):
    """The config to run with after a reload, and what changed."""

    config: Config
    applied: tuple[str, ...]  # dotted keys now in effect
    needs_restart: tuple[str, ...]  # dotted keys that changed but keep their running value


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """Merge ``new`` into ``running``, taking only the keys a reload can apply live.

    Args:
        running: the configuration the daemon runs with.
        new: the configuration just read from the file.

    Returns:
        The merged config (running values for everything not live) and the changed keys.
    """
    applied: list[str] = []
    restart: list[str] = []
    sections = {}
    for name in _SECTIONS:
        old_section, new_section = getattr(running, name), getattr(new, name)
        live = {}
        for field in dataclasses.fields(old_section):
            before, after = getattr(old_section, field.name), getattr(new_section, field.name)
            if before == after:
                continue
            key = f"{name}.{field.name}"
            if (name, field.name) in LIVE_KEYS:
                live[field.name] = after
                applied.append(key)
            else:
                restart.append(key)
        if live:
            sections[name] = dataclasses.replace(old_section, **live)
    restart += [name for name in _TABLE_ARRAYS if getattr(running, name) != getattr(new, name)]
    merged = dataclasses.replace(running, **sections, warnings=new.warnings)
    return ReloadPlan(merged, tuple(applied), tuple(restart))


def apply_log_level(plan: ReloadPlan) -> None:
    """Set the root log level when the reload changed ``logging.level``; else the level
    in force stays (``--log-level`` on the command line wins until the file changes it)."""
    if "logging.level" in plan.applied:
        logging.getLogger().setLevel(plan.config.logging.level)


def apply_decoding(plan: ReloadPlan, supervisor: Supervisor) -> None:
    """Hand the reloaded decoding settings to the model: applied by the pipeline thread
    between frames, and kept for every worker that replaces the current one (restart,
    fallback, re-probe, model switch)."""
    m = plan.config.model
    settings = DecodeSettings(m.threshold, m.top_k, m.iou, m.max_detections)
    supervisor.set_decoding(settings, m.labels_filter)
    log_filter_warnings(plan, supervisor.current)  # a typo drops every result


def log_filter_warnings(plan: ReloadPlan, running: RunningModel | None) -> None:
    """After a reload that changed ``model.labels_filter``: warn about its entries that
    the running model (the configured one or a release) never gives."""
    if running is not None and "model.labels_filter" in plan.applied:
        source, filter_ = plan.config.source, plan.config.model.labels_filter
        for warning in filter_warnings(source, filter_, running.options, running.codec):
            logger.warning("%s", warning)


def log_plan(plan: ReloadPlan, path: str) -> None:
    """Say what a reload of ``path`` applied, and what waits for a restart."""
    logger.info(
        "reload: applied %s (%s)",
        path,
        ", ".join(plan.applied) or "nothing changed that applies live",
    )
    if plan.needs_restart:
        logger.warning(
            "reload: %s changed in %s but only apply after a restart; still running "
            "with the previous values",
            ", ".join(plan.needs_restart),
            path,
        )


def read_config(path: str, signals: SignalQueue) -> Config:
    """Load the config file at ``path`` (as :func:`load_config`), giving way to a stop
    signal: a FIFO nobody feeds blocks the open, and SIGTERM must still stop the daemon.

    Raises:
        ConfigError: the file is unreadable or invalid.
        StopRequested: a stop signal arrived before or while it was read.
    """
    try:
        with signals.stop_interrupts():
            return load_config(path)
    except StopRequested as exc:
        raise StopRequested(f"{path}: stopped while reading the config ({exc})") from exc


def reread_config(path: str, signals: SignalQueue) -> Config | None:
    """The config for a SIGHUP reload, or None to keep the running one (the reason is
    logged; after a stop signal the main loop stops next: the signal stays queued)."""
    try:
        return read_config(path, signals)
    except StopRequested as exc:
        logger.warning("reload: %s", exc)
    except EdgeAgentError as exc:
        logger.error("reload: keeping the running configuration: %s", exc)
    except Exception:  # a parser failure that is no ConfigError must not kill the daemon
        logger.exception("reload: keeping the running configuration: %s could not be read", path)
    return None
