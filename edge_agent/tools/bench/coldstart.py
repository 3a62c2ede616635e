"""Cold start of the real daemon: ``edge-agent run`` exec -> first result at the subscriber.

The benchmark writes a config for the model, the source and the benchmark's broker,
starts ``python -m edge_agent run`` as a new process (interpreter start-up, imports,
publisher, forkserver and worker, model load, camera, first frame), and measures the
time until the subscriber receives the first result. Then it stops the daemon with
SIGTERM as systemd would.

The daemon runs as a fleet box does: with signed model updates on, trusting a key made
for the run (the update agent and ``cryptography`` are part of its memory and start-up).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from edge_agent.errors import EdgeAgentError
from edge_agent.inference.model import ModelOptions
from edge_agent.tools.bench import procfs
from edge_agent.tools.bench.sink import PREFIX, Sink
from edge_agent.tools.release.operator import keygen

logger = logging.getLogger(__name__)

COMPLAINT = re.compile(r" (WARNING|ERROR|CRITICAL) |^Traceback")
MAX_WARNINGS = 20


def _toml(value: Any) -> str:
    """A TOML scalar or array."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def daemon_config(
    options: ModelOptions, source: str, sink: Sink, device: str, state_dir: str, trusted_key: str
) -> str:
    """The TOML config of a benchmark daemon (discovery and stats out of the way; signed
    updates on, trusting ``trusted_key``, as on a fleet box).

    Returns:
        The document.
    """
    sections: Mapping[str, Mapping[str, Any]] = {
        "device": {"id": device, "state_dir": state_dir},
        "camera": {"name": "bench", "source": source, "loop": True},
        "model": {
            "path": os.path.abspath(options.path),
            "labels": os.path.abspath(options.labels) if options.labels else "",
            "device": options.device,
            "num_threads": options.num_threads,
        },
        "mqtt": {
            "host": sink.host,
            "port": sink.port,
            "protocol": sink.protocol,
            "prefix": PREFIX,
            "publish_every_frame": True,
            "homeassistant": False,
            "reconnect_min": 0.2,
        },
        "stats": {"interval": 60.0},
        "updates": {"enabled": True, "trusted_keys": [trusted_key]},
        "logging": {"level": "WARNING"},
    }
    lines = []
    for name, body in sections.items():
        lines.append(f"[[{name}]]" if name == "camera" else f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in body.items())
        lines.append("")
    return "\n".join(lines)


def daemon_start(
    options: ModelOptions,
    source: str,
    sink: Sink,
    device: str,
    timeout: float = 60.0,
    settle: float = 2.0,
) -> dict[str, Any]:
    """Start ``edge-agent run``, time its first delivered result, read its memory.

    Args:
        options: the model.
        source: camera source (a file path is made absolute); the daemon reads it in
            real time, as a camera.
        sink: the started broker + subscriber.
        device: the daemon's device id.
        timeout: seconds to wait for the first result.
        settle: seconds the daemon runs after its first result before its memory is read.

    Returns:
        ``{"first_result_s": seconds from exec, "results": results delivered,
        "memory_mb": per process, "exit_code": the daemon's exit code, "warnings": its
        logged warnings and errors (at most 20)}``.

    Raises:
        EdgeAgentError: the daemon exited or published nothing within ``timeout``.
    """
    if os.path.exists(source):
        source = os.path.abspath(source)
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-run-") as work:
        path = os.path.join(work, "config.toml")
        public = os.path.join(work, "release.pub")
        keygen(os.path.join(work, "release.key"), public)
        with open(path, "w", encoding="utf-8") as f:
            state = os.path.join(work, "state")
            f.write(daemon_config(options, source, sink, device, state, public))
        log_path = os.path.join(work, "daemon.log")
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        with open(log_path, "w+b") as log:
            started = time.time()
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # its forkserver and worker go with it
            )
            memory: dict[str, Any] = {}
            try:
                first = _wait_first(sink, device, proc, started + timeout)
                if first is not None:
                    time.sleep(settle)
                    memory = _memory(proc.pid)
            finally:
                code = _stop(proc)
            log.seek(0)
            lines = log.read().decode("utf-8", "replace").strip().splitlines()
            if first is None:
                tail = lines[-5:]
                raise EdgeAgentError(
                    f"model {options.path}: edge-agent run published no result within "
                    f"{timeout:.0f}s (exit code {code}): " + " | ".join(tail)
                )
    results = len(sink.collect(device))
    return {
        "first_result_s": first - started,
        "results": results,
        "memory_mb": memory,
        "exit_code": code,
        # What the daemon complained about (its level is WARNING): a healthy start has none.
        "warnings": [line for line in lines if COMPLAINT.search(line)][:MAX_WARNINGS],
    }


def _memory(pid: int) -> dict[str, Any]:
    """RSS, peak and PSS of the daemon's processes, with the same totals as the pipeline."""
    out: dict[str, Any] = {}
    for role, p in procfs.daemon_processes(pid).items():
        mem = procfs.memory(p, pss=True) if p else None
        out[role] = {
            "peak_mb": mem.peak if mem else None,
            "steady_mb": mem.rss if mem else None,
            "pss_mb": mem.pss if mem else None,
        }
    for key, roles in (("total", ("daemon", "worker")), ("all", tuple(out))):
        out[key] = {
            q: sum(out[r][q] or 0.0 for r in roles) for q in ("peak_mb", "steady_mb", "pss_mb")
        }
    return out


def _wait_first(sink: Sink, device: str, proc: subprocess.Popen, deadline: float) -> float | None:
    """Poll the subscriber for the daemon's first result until it comes or ``deadline``."""
    while time.time() < deadline:
        first = sink.first(device)
        if first is not None:
            return first
        if proc.poll() is not None:
            return None
        time.sleep(0.02)
    return None


def _stop(proc: subprocess.Popen) -> int | None:
    """SIGTERM, wait, then SIGKILL the process group; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15.0)
        except subprocess.TimeoutExpired:
            logger.warning("bench: edge-agent run %d ignored SIGTERM; killing it", proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:
        return None
    return proc.returncode
