"""``edge-agent demo``: the real daemon on the bundled model and clip, its output shown live.

Nothing but Python (>= 3.10 with the ``[broker]`` extra) or a mosquitto binary is
needed. The daemon (``edge-agent run``, a subprocess in its own session) gets a config
written to a temporary directory that also holds its state: the bundled colour-blob
detector, the bundled clip looping as the camera, and a broker: the one given with
``--broker``, else whatever answers MQTT on localhost:1883, else an embedded amqtt
broker on a free loopback port, else (Python 3.9, no amqtt) a local mosquitto there
(tools/demo/brokers.py). A paho subscriber prints each result and stats message the
daemon publishes as one readable line. On Ctrl-C (or after ``--seconds``) the daemon
gets SIGTERM, anything left of its process group is killed, the broker stops and the
directory is removed.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import edge_agent
from edge_agent.config import load_config
from edge_agent.daemon.signals import SignalQueue
from edge_agent.errors import PublishError
from edge_agent.publishing.settings import MqttSettings
from edge_agent.publishing.topics import Topics
from edge_agent.redaction import mask_credentials
from edge_agent.tools.demo.brokers import DemoBroker, start_demo_broker
from edge_agent.tools.demo.setup import PREFIX, demo_config, find_demo_assets, parse_broker
from edge_agent.tools.demo.view import Viewer
from edge_agent.tools.doctor.probes import probe_broker

logger = logging.getLogger(__name__)

LOCAL_BROKER = ("localhost", 1883)
STOP_TIMEOUT = 15.0
NO_RESULTS_AFTER = 20.0
# A systemd unit's variables: the daemon must not notify the unit the demo may run in.
_SCRUB = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


# ----------------------------------------------------------------------------- demo


@dataclass
class DemoOptions:
    """What ``edge-agent demo`` was asked for (see its ``--help``)."""

    seconds: float | None = None
    broker: str | None = None
    model: str | None = None
    labels: str | None = None
    source: str | None = None
    keep: bool = False
    log_level: str = "WARNING"


class Demo:
    """One demo run: broker, daemon subprocess, viewer, and their cleanup.

    Args:
        options: the command-line options.
        out: where the stream goes (stdout).
        err: where problems and the daemon's warnings go (stderr).
    """

    def __init__(self, options: DemoOptions, out: IO[str], err: IO[str]):
        self.options = options
        self._out, self._err = out, err
        self._lines: queue.SimpleQueue[tuple[bool, str]] = queue.SimpleQueue()
        self._threshold = logging.getLevelName((options.log_level or "WARNING").upper())
        if not isinstance(self._threshold, int):
            self._threshold = logging.WARNING
        self.workdir: Path | None = None
        self.broker: DemoBroker | None = None
        self._broker_kind = ""
        self.viewer: Viewer | None = None
        self.daemon: subprocess.Popen | None = None
        self._relay: threading.Thread | None = None
        self._external = False
        self._reader_gone = False  # `demo | head`: stop, clean up, and say so (EPIPE)

    # ---- output (main thread only) ----------------------------------------------------

    def _emit(self, line: str, error: bool = False) -> None:
        """Write one line now; a closed pipe (``demo | head``) only ends the output."""
        stream = self._err if error else self._out
        try:
            stream.write(line + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError):
            # The reader went away: stop writing and stop the demo (else it would run on
            # unseen, forever without --seconds), cleaning up the daemon, broker and dir.
            self._out = self._err = _Discard()
            self._reader_gone = True

    def _drain(self) -> None:
        """Write the lines the viewer and the log relay queued."""
        while True:
            try:
                error, line = self._lines.get_nowait()
            except queue.Empty:
                return
            self._emit(line, error)

    # ---- steps --------------------------------------------------------------------

    def _pick_broker(self) -> tuple[MqttSettings, str]:
        """The broker to use and how it was chosen (starts the embedded one if needed).

        Raises:
            PublishError: --broker does not answer, or the embedded broker cannot start.
        """
        user = os.environ.get("EDGE_AGENT_MQTT_USERNAME") or None
        password = os.environ.get("EDGE_AGENT_MQTT_PASSWORD") or None if user else None
        if self.options.broker:
            host, port = parse_broker(self.options.broker)
            settings = MqttSettings(host=host, port=port, username=user, password=password)
            probe = probe_broker(settings, 3.0, client_id=f"{PREFIX}-probe-{os.getpid()}")
            if not probe.ok:
                raise PublishError(f"--broker: {probe.detail}")
            self._external = True
            return settings, f"{host}:{port} (--broker)"
        host, port = LOCAL_BROKER
        settings = MqttSettings(host=host, port=port, username=user, password=password)
        probe = probe_broker(settings, 1.0, client_id=f"{PREFIX}-probe-{os.getpid()}")
        if probe.ok:
            self._external = True
            return settings, f"{host}:{port} (already running here)"
        why = "nothing answered" if probe.stage == "tcp" else probe.detail
        assert self.workdir is not None
        # Assigned only once started: cleanup must not report stopping a broker that
        # never ran.
        self.broker, self._broker_kind, protocol = start_demo_broker(self.workdir)
        settings = MqttSettings(host="127.0.0.1", port=self.broker.port, protocol=protocol)
        where = f"{self._broker_kind} on 127.0.0.1:{self.broker.port}"
        return settings, f"{where} ({host}:{port}: {why})"

    def _start_daemon(self, config_path: Path) -> subprocess.Popen:
        """``edge-agent run`` in its own session (Ctrl-C reaches only us; we stop it)."""
        assert self.workdir is not None
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env.pop("EDGE_AGENT_CONFIG", None)
        # The package's own parent first: a source checkout runs without installing.
        root = str(Path(edge_agent.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(config_path)],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._relay = threading.Thread(
            target=self._relay_log, args=(proc.stdout,), name="demo-daemon-log", daemon=True
        )
        self._relay.start()
        return proc

    def _relay_log(self, stream: IO[bytes]) -> None:
        """Copy the daemon's output to daemon.log; queue records at the chosen level."""
        assert self.workdir is not None
        visible = False
        with open(self.workdir / "daemon.log", "ab") as log:
            for raw in iter(stream.readline, b""):  # ends at EOF: every writer exited
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").rstrip()
                match = _LOG_LINE.match(line)
                if match:  # other lines (tracebacks) follow their record's visibility
                    visible = logging.getLevelName(match.group(1)) >= self._threshold
                if visible:
                    self._lines.put((True, f"daemon: {line}"))

    def _stop_daemon(self, flags: SignalQueue) -> int | None:
        """SIGTERM, wait, and SIGKILL the process group if it overstays or the user insists.

        Returns:
            The daemon's exit code, or None when it had to be killed.
        """
        proc = self.daemon
        if proc is None:
            return None
        insist = flags.stop_count  # one more Ctrl-C means: kill it now
        if proc.poll() is None:
            self._emit(f"stopping: SIGTERM to the daemon (pid {proc.pid})")
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                if flags.stop_count > insist:
                    break  # Ctrl-C again: do not wait any longer
                self._drain()
                try:
                    proc.wait(0.1)
                except subprocess.TimeoutExpired:
                    pass
        code = proc.poll()
        self._reap(proc.pid, grace=0.0 if code is None else 3.0)
        return code

    def _reap(self, pgid: int, grace: float) -> None:
        """Wait ``grace`` s for the daemon's session (worker, forkserver) to end, then kill it."""
        deadline = time.monotonic() + grace
        try:
            while time.monotonic() < deadline:
                os.killpg(pgid, 0)
                time.sleep(0.05)
            os.killpg(pgid, signal.SIGKILL)
            self._emit(f"killed what was left of the daemon's process group {pgid}", True)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone
        if self.daemon is not None:
            try:
                self.daemon.wait(5.0)
            except subprocess.TimeoutExpired:
                self._emit(f"daemon pid {pgid} did not exit after SIGKILL", True)
        if self._relay is not None:
            self._relay.join(5.0)

    def _cleanup(self) -> None:
        """Stop whatever runs, in order; each step bounded; safe to call twice."""
        if self.daemon is not None and self.daemon.poll() is None:
            self._reap(self.daemon.pid, grace=0.0)
        if self.viewer is not None:
            if self._external:
                self.viewer.clear_retained()
            self.viewer.stop()
            self.viewer = None
        if self.broker is not None:
            stopped = self.broker.stop(5.0)
            state = "stopped" if stopped else "hung"
            self._emit(f"{self._broker_kind} broker {state}", not stopped)
            self.broker = None
        self._drain()
        if self.workdir is not None:
            if self.options.keep:
                self._emit(f"kept {self.workdir} (config.toml, daemon.log, state/)")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self._emit(f"removed {self.workdir}")
            self.workdir = None

    def _log_tail(self, lines: int = 15) -> list[str]:
        """The end of daemon.log, for a failure message."""
        try:
            text = (self.workdir / "daemon.log").read_text(errors="replace")  # type: ignore[operator]
        except OSError:
            return []
        return text.splitlines()[-lines:]

    # ---- the run ------------------------------------------------------------------

    def run(self) -> int:
        """Run until Ctrl-C, SIGTERM, SIGHUP or ``--seconds``; then clean up.

        Returns:
            0 after a clean stop; 1 when the daemon failed, would not stop, or (with
            ``--seconds``) published no result.

        Raises:
            ConfigError: a bundled file is missing or an override is invalid.
            PublishError: the broker cannot be reached or started.
            BrokenPipeError: the reader of the output went away (after the cleanup).
        """
        flags = SignalQueue(
            stop_signals=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP), reload_signals=()
        )
        flags.install()
        try:
            code = self._run(flags)
        finally:
            self._cleanup()
            flags.restore()
        if self._reader_gone:
            raise BrokenPipeError(errno.EPIPE, "the reader of the demo's output went away")
        return code

    def _run(self, flags: SignalQueue) -> int:
        """The demo proper (cleanup is the caller's)."""
        opts = self.options
        assets = find_demo_assets(opts.model, opts.labels, opts.source)
        self.workdir = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
        settings, how = self._pick_broker()
        topics = Topics(PREFIX, f"demo-{secrets.token_hex(3)}")
        config_path = self.workdir / "config.toml"
        config_path.write_text(
            demo_config(
                assets,
                self.workdir,
                settings.host,
                settings.port,
                topics.device_id,
                settings.protocol,
            )
        )
        load_config(config_path)  # a bad --source is reported here, naming the option's key
        self.viewer = Viewer(settings, topics, lambda line: self._lines.put((False, line)))
        self.viewer.start()
        self.daemon = self._start_daemon(config_path)
        labels = f" (labels {assets.labels})" if assets.labels else ""
        looping = " (looping)" if os.path.isfile(str(assets.source)) else ""
        for line in (
            "edge-agent demo: the real daemon, what it publishes printed as it arrives",
            f"  model    {assets.model}{labels}",
            f"  camera   cam0 <- {mask_credentials(str(assets.source))}{looping}",
            f"  broker   {how}",
            f"  daemon   pid {self.daemon.pid}: edge-agent run --config {config_path}",
            f"  watch    mosquitto_sub -h {settings.host} -p {settings.port} "
            f"-t '{topics.base}/#' -v",
            f"Stopping after {opts.seconds:g} s." if opts.seconds else "Ctrl-C stops the demo.",
            "",
        ):
            self._emit(line)
        started = time.monotonic()
        deadline = started + opts.seconds if opts.seconds else None
        warned = False
        while not flags.stop_requested and not self._reader_gone and self.daemon.poll() is None:
            self._drain()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if not warned and self.viewer.results == 0 and now - started > NO_RESULTS_AFTER:
                warned = True
                self._emit(f"no result after {NO_RESULTS_AFTER:g} s; see daemon.log", True)
            flags.wait(0.1)
        self._drain()
        exited_alone = self.daemon.poll() is not None
        elapsed = time.monotonic() - started
        code = self._stop_daemon(flags)
        self._drain()
        seen = ", ".join(f"{k} {v}" for k, v in sorted(self.viewer.labels.items()))
        self._emit(
            f"summary: {self.viewer.results} results ({seen or 'no detections'}), "
            f"{self.viewer.stats} stats messages in {elapsed:.1f} s"
        )
        if exited_alone or code != 0:
            why = "was killed" if code is None else f"exited with code {code}"
            self._emit(f"the daemon {why}; the end of its log:", True)
            for line in self._log_tail():
                self._emit(f"  {line}", True)
            return 1
        self._emit("daemon exited 0")
        if opts.seconds and self.viewer.results == 0:
            self._emit("no result was published", True)
            return 1
        return 0


class _Discard:
    """A text stream that drops everything (after the reader closed the pipe)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
