"""``edge-agent doctor``: check that this box can run the daemon, and say what is wrong.

Each check appends one :class:`Check` (``ok``, ``warn``, ``fail``, ``info`` or ``skip``)
to a :class:`Report`. Host checks (Python, packages, TFLite runtimes, Coral's pycoral,
libedgetpu, Edge TPUs, device permissions, V4L2 devices) live in
:mod:`edge_agent.tools.doctor.host`; the checks of one config file (validation,
state directory, cameras, model, broker, trusted keys) live here, on top of the
bounded probes of :mod:`edge_agent.tools.doctor.probes`. Warnings never fail the report.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from edge_agent.capture.sources import SourceKind, parse_source
from edge_agent.capture.v4l2 import ModelFit
from edge_agent.config import DEFAULT_CONFIG_PATH, Config, load_config
from edge_agent.errors import EdgeAgentError
from edge_agent.inference.backends.edgetpu import resolve_edgetpu_model
from edge_agent.inference.model import ModelOptions
from edge_agent.redaction import mask_credentials
from edge_agent.tools.doctor.probes import grab_frame, probe_broker, probe_model

OK, WARN, FAIL, INFO, SKIP = "ok", "warn", "fail", "info", "skip"


class Check(NamedTuple):
    """One line of the report: ``data`` holds the machine-readable facts (``--json``)."""

    section: str
    name: str
    status: str
    detail: str
    data: dict[str, Any]


class Report:
    """The checks in the order they ran."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def add(self, section: str, name: str, status: str, detail: str, **data: Any) -> Check:
        """Append one check and return it."""
        check = Check(section, name, status, detail, data)
        self.checks.append(check)
        return check

    def count(self, status: str) -> int:
        """How many checks have this status."""
        return sum(c.status == status for c in self.checks)

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return self.count(FAIL) == 0

    def failed(self) -> list[Check]:
        """The failing checks."""
        return [c for c in self.checks if c.status == FAIL]

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "errors", "warnings", "checks": [{section, name, status, detail, data}]}``."""
        return {
            "ok": self.ok,
            "errors": self.count(FAIL),
            "warnings": self.count(WARN),
            "checks": [c._asdict() for c in self.checks],
        }

    def format_text(self) -> str:
        """The human report: one block per section, one line per check, then a summary."""
        lines: list[str] = []
        width = max((len(c.name) for c in self.checks), default=8)
        section = None
        for check in self.checks:
            if check.section != section:
                section = check.section
                if lines:
                    lines.append("")
                lines.append(section)
            mark = check.status.upper() if check.status in (WARN, FAIL) else check.status
            text = check.detail.replace("\n", "\n" + " " * (width + 10))
            lines.append(f"  {mark:<5} {check.name:<{width}}  {text}")
        lines.append("")
        errors, warnings = self.count(FAIL), self.count(WARN)
        verdict = "ready" if self.ok else "NOT ready"
        lines.append(f"{errors} error(s), {warnings} warning(s): {verdict}")
        return "\n".join(lines)


# ------------------------------------------------------------------------ the doctor


class Doctor:
    """Runs every check and fills a :class:`Report`.

    Args:
        config_path: the config file (default ``$EDGE_AGENT_CONFIG`` or the system one).
        explicit: the user named the file: a missing file is then an error, not a warning.
        sys_root, dev_root: sysfs and /dev (tests pass fake trees).
        timeout: seconds for each camera frame and the broker.
        model_timeout: seconds for loading the model.
    """

    def __init__(
        self,
        config_path: str | None = None,
        *,
        explicit: bool = False,
        sys_root: str = "/sys",
        dev_root: str = "/dev",
        timeout: float = 5.0,
        model_timeout: float = 60.0,
    ):
        env_path = os.environ.get("EDGE_AGENT_CONFIG")
        self.config_path = config_path or env_path or DEFAULT_CONFIG_PATH
        self.explicit = explicit or bool(config_path or env_path)
        self.sys_root = sys_root
        self.dev_root = dev_root
        self.timeout = timeout
        self.model_timeout = model_timeout
        self.report = Report()

    def run(self) -> Report:
        """Run the host checks, then the config's; return the report."""
        from edge_agent.tools.doctor import host as doctor_host

        config, config_check = self._load()
        host = doctor_host.HostChecks(self.report, self.sys_root, self.dev_root)
        host.python()
        host.runtimes()
        host.coral(
            config.model.device if config else "auto",
            config.model.edgetpu_library if config else "",
        )
        host.backends()
        self.report.checks.append(config_check)
        for warning in config.warnings if config else ():
            self.report.add("Config", "warning", WARN, warning)
        if config is not None:
            self.state(config)
        host.video_devices()
        if config is not None:
            self.cameras(config)
            self.model(config)
            self.broker(config)
            self.keys(config)
        return self.report

    def _load(self) -> tuple[Config | None, Check]:
        """Validate the config file first, so the host checks know the device wanted."""
        path = self.config_path
        if not os.path.exists(path) and not self.explicit:
            detail = f"{path} does not exist: config checks skipped (use --config FILE)"
            return None, Check("Config", "config", WARN, detail, {"file": path})
        try:
            config = load_config(path)
        except EdgeAgentError as exc:
            return None, Check("Config", "config", FAIL, str(exc), {"file": path})
        return config, Check("Config", "config", OK, f"{path} is valid", {"file": path})

    def state(self, config: Config) -> None:
        """The state and spool directories are writable, with room for the spool."""
        dirs = {"state_dir": config.device.state_dir, "spool_dir": config.spool_dir}
        for name, path in dirs.items():
            status, detail = _writable(path)
            self.report.add("State", name, status, detail, path=path)
        existing = _existing_ancestor(config.device.state_dir)
        free_mb = shutil.disk_usage(existing).free / 1e6
        wanted = config.mqtt.spool_max_mb + config.updates.max_size_mb
        status = OK if free_mb >= wanted else WARN
        detail = f"{free_mb:,.0f} MB free on {existing} (spool up to {config.mqtt.spool_max_mb:g}"
        detail += f" MB, one model download up to {config.updates.max_size_mb:g} MB)"
        self.report.add("State", "disk", status, detail, free_mb=round(free_mb, 1))

    def cameras(self, config: Config) -> None:
        """Every enabled camera opens and gives a frame within the timeout (a camera with
        ``fit_model`` in the mode the daemon would ask for)."""
        model_fit = _model_fit(config) if any(c.fit_model for c in config.camera) else None
        for cam in config.camera:
            if not cam.enabled:
                self.report.add("Cameras", cam.name, SKIP, "disabled")
                continue
            device = parse_source(cam.source).kind == SourceKind.DEVICE
            fit = model_fit if cam.fit_model and device else None
            shape, error, seconds = grab_frame(cam, self.timeout, fit)
            source = mask_credentials(str(cam.source))  # rtsp://user:***@host
            if shape is not None:
                detail = f"{shape[1]}x{shape[0]} frame from {source} in {seconds:.2f}s"
                if fit is not None:
                    detail += f" (fit_model, for the model's {fit.width}x{fit.height} input)"
                fitted = list(fit) if fit else None
                self.report.add(
                    "Cameras", cam.name, OK, detail, source=source, shape=shape, fit=fitted
                )
            else:
                error = mask_credentials(error)
                detail = error if error.startswith(source) else f"{source}: {error}"
                missing = not os.path.exists(source)
                if isinstance(cam.source, int) or (source.startswith("/dev/") and not missing):
                    detail += " (a running edge-agent may be holding the device)"
                self.report.add("Cameras", cam.name, FAIL, detail, source=source)

    def model(self, config: Config) -> None:
        """The model loads on the best backend and runs one frame, in a child process."""
        from edge_agent.daemon.options import model_options

        options = model_options(config)
        if not options.path:
            options = self._installed_release(config, options)
            if options is None:
                return
        if not Path(options.path).is_file():
            self.report.add("Model", "model", FAIL, f"{options.path}: no such file")
            return
        result = probe_model(options, self.model_timeout)
        stderr = result.pop("stderr", "").strip()
        if not result["ok"]:
            error = result["error"]
            detail = error if error.startswith(options.path) else f"{options.path}: {error}"
            if stderr:
                detail += "\n" + stderr.splitlines()[-1]
            self.report.add("Model", "model", FAIL, detail, path=options.path, stderr=stderr)
            return
        detail = (
            f"{result['file']} runs on {result['backend']} ({result['runtime']}): "
            f"{result['task']}, input {result['input'][0]} {result['input'][1]}, "
            f"loaded in {result['load_ms']:.0f} ms, invoke {result['invoke_ms']:.2f} ms"
        )
        self.report.add("Model", "model", OK, detail, **result)
        norm = result.get("normalization") or {}
        self.report.add(
            "Model",
            "assumptions",
            INFO,
            f"{result['task']} ({result.get('family')}); input normalization: "
            f"{norm.get('reason', '?')}; labels: {result.get('labels_source')} "
            f"({result['labels']})",
        )
        # A skipped Edge TPU matters only when the model has an Edge TPU build to run.
        try:
            resolve_edgetpu_model(options.path)
            has_tpu_build = options.device != "cpu"
        except EdgeAgentError:
            has_tpu_build = False
        for backend, reason in result["attempts"]:
            self.report.add("Model", f"{backend} skipped", WARN if has_tpu_build else INFO, reason)
        for warning in result["warnings"]:
            self.report.add("Model", "labels", WARN, warning)

    def _installed_release(self, config: Config, base: ModelOptions) -> ModelOptions | None:
        """No ``model.path``: the daemon runs the release an update installed, if any."""
        from edge_agent.daemon.update_options import release_options
        from edge_agent.updates.store import ModelStore

        root = Path(config.device.state_dir) / "models"
        try:
            release = ModelStore(config.device.state_dir).active() if root.is_dir() else None
        except (EdgeAgentError, OSError) as exc:
            self.report.add("Model", "model", FAIL, f"installed release in {root} unusable: {exc}")
            return None
        if release is None:
            detail = f"model.path is empty and no release is installed in {root}"
            self.report.add("Model", "model", FAIL, detail)
            return None
        self.report.add("Model", "release", INFO, f"installed release {release.path}")
        return release_options(base, release.path, release.manifest)

    def broker(self, config: Config) -> None:
        """TCP, TLS and CONNACK with the config's credentials."""
        from edge_agent.daemon.options import mqtt_settings

        if not config.mqtt.enabled:
            self.report.add("MQTT", "broker", SKIP, "mqtt.enabled = false")
            return
        settings = mqtt_settings(config)
        how = settings.transport + (", TLS" if settings.tls else ", no TLS")
        who = f"user {settings.username!r}" if settings.username else "anonymous"
        # Each of mqtt.hosts: a dead standby is a warning while another broker answers.
        probes = []
        for host, port in settings.endpoints():
            one = dataclasses.replace(settings, host=host, port=port, hosts=())
            try:
                probes.append(probe_broker(one, self.timeout))
            except EdgeAgentError as exc:
                self.report.add("MQTT", "broker", FAIL, str(exc))
                return
        any_ok = any(p.ok for p in probes)
        for probe in probes:
            detail = f"{probe.detail} ({how}, {who}, {probe.ms:.0f} ms)"
            level = OK if probe.ok else WARN if any_ok else FAIL
            self.report.add("MQTT", "broker", level, detail, stage=probe.stage, ms=probe.ms)

    def keys(self, config: Config) -> None:
        """The update signing keys load."""
        from edge_agent.updates.signing import TrustedKeys

        up = config.updates
        if not up.enabled:
            self.report.add("Updates", "trusted_keys", SKIP, "updates.enabled = false")
            return
        if not up.trusted_keys:
            detail = "none configured: every model update will be rejected as untrusted"
            self.report.add("Updates", "trusted_keys", WARN, detail)
            return
        try:
            keys = TrustedKeys.from_paths(up.trusted_keys)
        except (EdgeAgentError, OSError) as exc:
            self.report.add("Updates", "trusted_keys", FAIL, str(exc))
            return
        status = OK if len(keys) else FAIL
        detail = f"{len(keys)} key(s): {', '.join(keys.ids) or 'none found'}"
        self.report.add("Updates", "trusted_keys", status, detail, ids=list(keys.ids))


def _existing_ancestor(path: str) -> str:
    """The path itself or its nearest existing parent."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return str(p)


def _writable(path: str) -> tuple[str, str]:
    """Whether the daemon can create files in a directory (or create the directory)."""
    if os.path.exists(path) and not os.path.isdir(path):
        return FAIL, f"{path} exists and is not a directory"
    target = path if os.path.isdir(path) else _existing_ancestor(path)
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".doctor-"):
            pass
    except OSError as exc:
        return FAIL, f"{target} is not writable by uid {os.getuid()}: {exc.strerror or exc}"
    if target != os.path.abspath(path):
        return OK, f"{path} does not exist yet; the daemon will create it in {target}"
    return OK, f"{path} is writable"


def _model_fit(config: Config) -> ModelFit | None:
    """The configured model's input, read from its file, for cameras with ``fit_model``
    (None when it cannot be read: the model check reports why)."""
    from edge_agent.daemon.options import model_options
    from edge_agent.inference.codec import describe_model

    options = model_options(config)
    if not options.path or not os.path.isfile(options.path):
        return None
    try:
        described = describe_model(options)
    except (EdgeAgentError, ValueError):
        return None
    width, height = described["input"]  # type: ignore[misc]
    return ModelFit(width, height, described["resize"] == "letterbox")
