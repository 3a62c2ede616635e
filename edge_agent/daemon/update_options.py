"""What a model release and the ``[updates]`` config mean for the daemon's options.

Pure functions: a release's model options over the configured ones, and the
``[updates]`` section as the installer's policy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edge_agent.config import Config
from edge_agent.inference.model import ModelOptions
from edge_agent.inference.postprocess import DecodeSettings
from edge_agent.updates.installer import UpdateSettings
from edge_agent.updates.manifest import Manifest
from edge_agent.updates.targets import DeviceIdentity
from edge_agent.updates.transport import DownloadSettings


def release_options(base: ModelOptions, root: Path, manifest: Manifest) -> ModelOptions:
    """Model options for a release: its files, its task and adapter settings over the config's.

    Args:
        base: options from the ``[model]`` config (device, threads, defaults).
        root: the release directory.
        manifest: the release manifest.
    """
    model = manifest.file("model")
    cpu = manifest.file("cpu_model")
    labels = manifest.file("labels")
    adapter = dict(manifest.adapter)
    settings = base.settings._replace(
        **{k: adapter[k] for k in DecodeSettings._fields if k in adapter}
    )
    return dataclasses.replace(
        base,
        path=str(root / model.name),
        cpu_model=str(root / cpu.name) if cpu else "",
        labels=str(root / labels.name) if labels else "",
        task=manifest.task or base.task,
        resize=adapter.get("resize", base.resize),
        input_mean=adapter.get("input_mean", base.input_mean),
        input_std=adapter.get("input_std", base.input_std),
        settings=settings,
    )


def update_settings(config: Config) -> UpdateSettings:
    """The ``[updates]`` section as the installer's policy."""
    u = config.updates
    return UpdateSettings(
        download=DownloadSettings(
            allowed_hosts=tuple(u.allowed_hosts),
            allow_http=u.allow_http,
            connect_timeout=min(10.0, u.download_timeout),
            read_timeout=u.download_timeout,
            retries=u.retries,
            attempt_timeout=u.attempt_timeout,
            max_duration=u.update_timeout,
            update_timeout=u.update_timeout,
            min_rate_bytes=u.min_rate_bytes,
            min_rate_window=u.min_rate_window,
        ),
        allow_force=u.force_allowed,
        max_file_bytes=int(u.max_size_mb * 1024 * 1024),
        device=DeviceIdentity(config.device.type, config.device.id, tuple(config.device.groups)),
        model_name=config.model.name,
        allow_model_change=u.allow_model_change,
    )
