"""What ``edge-agent demo`` runs: the bundled files, the broker address, the daemon config.

The bundled detector, labels and clip live in ``models/demo`` of the source tree (found
from an editable install or a checkout) or, in an installed wheel, in the
``share/edge-agent/demo`` data directory.
"""

from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path
from typing import NamedTuple, Union

import edge_agent
from edge_agent.errors import ConfigError

PREFIX = "edge-agent-demo"
STATS_INTERVAL = 2.0
MODEL, LABELS, CLIP = "color_blobs.tflite", "labels.txt", "clip.avi"


class DemoAssets(NamedTuple):
    """The model, labels (may be "") and camera source the demo runs."""

    model: str
    labels: str
    source: Union[int, str]


def demo_dirs() -> list[Path]:
    """Where the bundled demo files may be: the source tree (editable installs and
    checkouts), then the ``share/edge-agent/demo`` data directory of an installed wheel."""
    dirs = [Path(edge_agent.__file__).resolve().parent.parent / "models" / "demo"]
    for scheme in (None, f"{os.name}_user"):
        try:
            data = sysconfig.get_path("data", scheme) if scheme else sysconfig.get_path("data")
        except KeyError:
            continue
        dirs.append(Path(data) / "share" / "edge-agent" / "demo")
    return list(dict.fromkeys(dirs))


def find_demo_assets(
    model: str | None = None, labels: str | None = None, source: str | None = None
) -> DemoAssets:
    """The files to run: overrides where given, the bundled demo files otherwise.

    A model override drops the bundled labels (they name the demo model's classes).

    Raises:
        ConfigError: a bundled file is needed but not installed, or a given file is missing.
    """
    bundled = next((d for d in demo_dirs() if (d / MODEL).is_file()), None)
    if bundled is None and not (model and source):
        looked = ", ".join(str(d) for d in demo_dirs())
        raise ConfigError(
            f"the bundled demo files are not installed with this edge-agent (looked in "
            f"{looked}): run it from a source checkout (make demo), or pass --model and --source"
        )
    model_path = model or str(bundled / MODEL)
    labels_path = labels if labels is not None else ("" if model else str(bundled / LABELS))
    for option, path in (("--model", model_path), ("--labels", labels_path)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{option} {path}: no such file")
    if source is None:
        camera: Union[int, str] = str(bundled / CLIP)
    elif source.isdigit():
        camera = int(source)
    else:
        # The daemon resolves relative paths against its config file's (temporary) directory.
        camera = os.path.abspath(source) if os.path.exists(source) else source
    return DemoAssets(
        os.path.abspath(model_path), labels_path and os.path.abspath(labels_path), camera
    )


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``, port 1883) as a pair.

    Raises:
        ConfigError: the port is not a number in 1..65535.
    """
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "1883")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--broker {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def demo_config(
    assets: DemoAssets,
    workdir: Path,
    host: str,
    port: int,
    device_id: str,
    protocol: str = "auto",
) -> str:
    """The daemon's config: everything inside ``workdir``, no discovery, no updates;
    ``protocol`` is ``mqtt.protocol`` (3.1.1 for the embedded amqtt broker)."""
    q = json.dumps  # a JSON string is a valid TOML basic string
    source = assets.source if isinstance(assets.source, int) else q(assets.source)
    return f"""# written by edge-agent demo
[device]
id = {q(device_id)}
state_dir = {q(str(workdir / "state"))}

[[camera]]
name = "cam0"
source = {source}
loop = true

[model]
path = {q(assets.model)}
labels = {q(assets.labels)}
# One thread: TFLite_Detection_PostProcess with regular NMS drops the last class (blue)
# with num_threads >= 2 (tensorflow/tensorflow#56058); the demo model needs 0.5 ms anyway.
num_threads = 1

[mqtt]
host = {q(host)}
port = {port}
protocol = {q(protocol)}
prefix = {q(PREFIX)}
homeassistant = false
reconnect_min = 0.5
reconnect_max = 5.0

[stats]
interval = {STATS_INTERVAL}

[updates]
enabled = false

[logging]
level = "INFO"
"""
