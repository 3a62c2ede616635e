"""Run ``edge-agent run`` as a real subprocess for the end-to-end tests (tier 3).

:class:`DaemonProcess` writes a config TOML into the test's tmp dir (state under that
dir, a device id, the test broker's port, one camera, a model, short stats interval and
reconnect/backoff values), starts ``python -m edge_agent run --config FILE`` in its own
session with ``PYTHONPATH`` set to the repo (so the inference worker can import the
fake TPU driver from ``tests.support``), and keeps its stderr in a file. The
``edge_daemon`` fixture makes them and, at teardown, kills whatever is left of each
daemon's process group (the daemon, its forkserver and workers) and prints the log tail.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from edge_agent.publishing.topics import Topics
from tests.support.broker import Message, MqttSubscriber
from tests.support.paths import REPO

PREFIX = "e2e"
DEVICE_ID = "e2e-dev"
# Environment the daemon must not inherit from the test runner: systemd's variables and
# the agent's own settings would change what is tested.
_SCRUB = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def toml_value(value: Any) -> str:
    """One TOML value: str, bool, int, float or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, os.PathLike)):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(sections: Mapping[str, Any]) -> str:
    """A config document: dict values are tables, lists of dicts arrays of tables."""
    lines: list[str] = []
    for name, body in sections.items():
        tables = body if isinstance(body, list) else [body]
        header = f"[[{name}]]" if isinstance(body, list) else f"[{name}]"
        for table in tables:
            lines.append(header)
            lines.extend(f"{key} = {toml_value(v)}" for key, v in table.items() if v is not None)
            lines.append("")
    return "\n".join(lines)


def daemon_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment minus systemd/agent variables, plus PYTHONPATH=repo and ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("EDGE_AGENT_")
    }
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def python_stdout(code: str, timeout: float = 120.0) -> str:
    """Run ``python -c CODE`` in a fresh interpreter on this clone's code; its stdout.

    Raises:
        subprocess.CalledProcessError: it exited non-zero.
    """
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        cwd=REPO,
        env=daemon_environment(),
    ).stdout


def agent_command(*args: str) -> list[str]:
    """``python -m edge_agent ARGS`` with this interpreter."""
    return [sys.executable, "-m", "edge_agent", *args]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process visible in /proc."""
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        # The command name in parentheses may itself contain spaces and parentheses.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        out[int(entry.name)] = (ppid, cmdline)
    return out


def default_sections(
    tmp_path: Path, port: int, source: Any, model_file: Path, labels_file: Any
) -> dict:
    """The test config: fast backoffs everywhere, everything inside tmp_path."""
    return {
        "device": {"id": DEVICE_ID, "state_dir": str(tmp_path / "state")},
        "camera": [
            {
                "name": "cam0",
                "source": str(source) if isinstance(source, Path) else source,
                "loop": True,
                "reopen_initial": 0.2,
                "reopen_max": 0.5,
            }
        ],
        "model": {
            "path": str(model_file),
            "labels": str(labels_file) if labels_file else "",
            "num_threads": 1,
        },
        "inference": {"deadline": 5.0, "reprobe_initial": 0.5, "reprobe_max": 2.0},
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "prefix": PREFIX,
            "keepalive": 5,
            "reconnect_min": 0.2,
            "reconnect_max": 0.5,
        },
        "stats": {"interval": 1.0},
        "logging": {"level": "INFO"},
    }


def merge(base: dict, overrides: Mapping[str, Any]) -> dict:
    """Deep-merge per table; ``camera`` overrides apply to the first camera."""
    out = copy.deepcopy(base)
    for section, values in overrides.items():
        if values is None:
            out.pop(section, None)
        elif section == "camera" and isinstance(values, Mapping):
            out["camera"][0].update(values)
        elif isinstance(values, Mapping) and isinstance(out.get(section), dict):
            out[section].update(values)
        else:
            out[section] = copy.deepcopy(values)
    return out


class DaemonProcess:
    """One ``edge-agent run`` subprocess with its own config, state dir and log.

    Args:
        tmp_path: the test's directory (config, state and log go there).
        port: the MQTT broker port.
        source: camera source (a clip path, usually).
        model_file: model file.
        labels_file: labels file, or None.
        env: extra environment variables for the daemon (and its worker).
        **overrides: per-table config overrides, e.g. ``mqtt={"keepalive": 5}``.
    """

    def __init__(
        self,
        tmp_path: Path,
        port: int,
        source: Any,
        model_file: Path,
        labels_file: Any = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ):
        self.dir = tmp_path
        self.sections = merge(
            default_sections(tmp_path, port, source, model_file, labels_file), overrides
        )
        self.config_path = tmp_path / "config.toml"
        self.log_path = tmp_path / "daemon.log"
        self.topics = Topics(PREFIX, DEVICE_ID)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.write_config()

    # ---- config ------------------------------------------------------------------------

    def write_config(self, **overrides: Any) -> Path:
        """(Re)write the config file, applying ``overrides`` to the current sections."""
        self.sections = merge(self.sections, overrides)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(to_toml(self.sections))
        os.replace(tmp, self.config_path)  # a SIGHUP never reads a half-written file
        return self.config_path

    def environment(self) -> dict[str, str]:
        """The daemon's environment (see :func:`daemon_environment`)."""
        return daemon_environment(self.extra_env)

    # ---- process -----------------------------------------------------------------------

    def start(self, command: list[str] | None = None) -> DaemonProcess:
        """Start the daemon (its own session, so its whole process group can be reaped).

        Args:
            command: instead of ``edge-agent run --config FILE`` (a wrapper around it, or
                another config path).
        """
        assert self.proc is None, "already started"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command or agent_command("run", "--config", str(self.config_path)),
                cwd=self.dir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        """True while the daemon's main process runs."""
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        """Send a signal to the daemon's main process only."""
        assert self.alive(), f"daemon is not running:\n{self.log_tail()}"
        os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit.

        Args:
            sig: the signal (SIGTERM for a clean stop, SIGKILL for a crash).
            timeout: seconds to wait for the exit.

        Returns:
            The exit code (negative signal number when killed by a signal).

        Raises:
            AssertionError: still running after ``timeout`` (it is then killed).
        """
        assert self.proc is not None, "not started"
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(
                f"daemon did not exit within {timeout}s of {signal.Signals(sig).name}:\n"
                f"{self.log_tail()}"
            ) from None

    def wait_exit(self, timeout: float) -> int:
        """Wait for the daemon to exit by itself; its exit code."""
        assert self.proc is not None, "not started"
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running after {timeout}s") from None

    def worker_pids(self) -> list[int]:
        """The inference worker processes: children of the daemon's forkserver."""
        procs = _processes()
        servers = {
            pid
            for pid, (ppid, cmdline) in procs.items()
            if ppid == self.pid and "forkserver" in cmdline
        }
        return sorted(pid for pid, (ppid, _) in procs.items() if ppid in servers)

    def kill_group(self) -> None:
        """SIGKILL what is left of the daemon's process group (forkserver, workers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # nothing left in the group
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass

    # ---- log ---------------------------------------------------------------------------

    def log(self) -> str:
        """Everything the daemon wrote to stderr/stdout so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the log, for failure messages."""
        return self.log()[-chars:]

    def wait_log(self, pattern: str, timeout: float = 10.0, *, after: int = 0) -> re.Match:
        """Wait until the log (from character ``after``) matches ``pattern`` (a regex)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log(), after)
            if match:
                return match
            if not self.alive():
                raise AssertionError(
                    f"daemon exited before logging {pattern!r}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} not logged within {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)


class DaemonFactory:
    """What the ``edge_daemon`` fixture gives a test: makes daemons, runs the CLI.

    Tests reach every helper through the fixture, so their modules only need
    ``pytest_plugins = ["tests.support.daemon"]`` and no import of this module.
    """

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.made: list[DaemonProcess] = []

    def __call__(
        self,
        port: int,
        source: Any,
        model_file: Path,
        labels_file: Any = None,
        *,
        start: bool = True,
        **kwargs: Any,
    ) -> DaemonProcess:
        """A daemon in its own directory under tmp_path (see :class:`DaemonProcess`).

        Args:
            port, source, model_file, labels_file: as for DaemonProcess.
            start: start it now.
            **kwargs: ``env`` and per-table config overrides.

        Returns:
            The daemon (started unless ``start`` is False).
        """
        workdir = self.tmp_path / f"daemon{len(self.made)}"
        workdir.mkdir()
        daemon = DaemonProcess(workdir, port, source, model_file, labels_file, **kwargs)
        self.made.append(daemon)
        if start:
            daemon.start()
        return daemon

    def run_cli(
        self, *args: str, cwd: Path | None = None, timeout: float = 20.0
    ) -> subprocess.CompletedProcess:
        """Run ``edge-agent ARGS`` to completion with the daemon's environment.

        Returns:
            The completed process with text stdout/stderr.
        """
        return subprocess.run(
            agent_command(*args),
            cwd=cwd or self.tmp_path,
            env=daemon_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @staticmethod
    def retained(broker: Any, topic: str, timeout: float = 5.0) -> Message:
        """What a subscriber connecting now is given on ``topic``: the retained message.

        Raises:
            AssertionError: nothing arrives, or it is not flagged retained.
        """
        sub = MqttSubscriber(broker.host, broker.port, [topic]).start()
        try:
            msg = sub.wait_for(topic, timeout=timeout)
        finally:
            sub.stop()
        assert msg.retain, f"{topic}: {msg.payload!r} was not delivered as retained"
        return msg

    def cleanup(self) -> None:
        """Kill what is left of every daemon's process group; print each log tail."""
        for daemon in self.made:
            daemon.kill_group()
            # Shown by pytest only when the test failed.
            print(f"---- daemon log {daemon.log_path} ----\n{daemon.log_tail()}")


@pytest.fixture
def edge_daemon(tmp_path) -> Iterator[DaemonFactory]:
    """A :class:`DaemonFactory`: ``edge_daemon(port, source, model_file, ...)`` makes a
    daemon; at teardown their process groups are killed and their logs printed."""
    factory = DaemonFactory(tmp_path)
    yield factory
    factory.cleanup()
