"""Host checks of ``edge-agent doctor``: Python, packages, runtimes, Coral, devices.

Nothing here needs a config file. Each method appends its checks to the report it was
given (see :mod:`edge_agent.tools.doctor.report` for the statuses).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import grp
import importlib
import importlib.util
import os
import platform
import pwd
import stat
import sys
from importlib import metadata
from typing import Any

from edge_agent import __version__
from edge_agent.errors import EdgeAgentError
from edge_agent.inference.backends.cpu import CpuBackend
from edge_agent.inference.backends.discovery import BUILTIN, discover
from edge_agent.inference.backends.edgetpu import LIBRARY_KEY, delegate_path
from edge_agent.inference.devices import (
    USB_IDS,
    apex_temperatures,
    list_edge_tpus,
    parse_device_spec,
)

OK, WARN, FAIL, INFO, SKIP = "ok", "warn", "fail", "info", "skip"

# (import name, distribution names, required) of the packages the daemon uses.
PACKAGES = (
    ("numpy", ("numpy",), True),
    ("cv2", ("opencv-python-headless", "opencv-python", "opencv-contrib-python"), True),
    ("paho.mqtt", ("paho-mqtt",), True),
    ("cryptography", ("cryptography",), True),
    ("amqtt", ("amqtt",), False),
)
RUNTIMES = (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"))
# The apex driver throttles the PCIe Edge TPU from 85 C on.
APEX_HOT_C = 85.0
# A wheel user has no deploy/ folder: the hint names the package and where it comes from.
LIBEDGETPU_HINT = (
    "install the Debian package libedgetpu1-std from Coral's apt repository "
    "(https://packages.cloud.google.com/apt coral-edgetpu-stable main) or the community "
    "build's .deb (https://github.com/feranick/libedgetpu/releases); "
    "see deploy/LIBEDGETPU.md in the source"
)
PERMISSION_HINT = "install deploy/udev/99-edge-agent-coral.rules and add the user to group {}"


def dist_version(*names: str) -> str | None:
    """Version of the first installed distribution among ``names``, else None."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _read(path: str) -> str | None:
    """A small sysfs file's stripped text, None when unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _user() -> str:
    """The current user's name (uid when unnamed)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _group(gid: int) -> str:
    """A group's name (gid when unnamed)."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


class HostChecks:
    """Checks of this machine.

    Args:
        report: a :class:`~edge_agent.tools.doctor.report.Report` to append to.
        sys_root, dev_root: sysfs and /dev mount points (tests pass fake trees).
    """

    def __init__(self, report: Any, sys_root: str = "/sys", dev_root: str = "/dev"):
        self.report = report
        self.sys_root = sys_root
        self.dev_root = dev_root

    def add(self, section: str, name: str, status: str, detail: str, **data: Any) -> None:
        """Append one check."""
        self.report.add(section, name, status, detail, **data)

    def python(self) -> None:
        """Interpreter and package versions; required packages must import."""
        section = "Python and packages"
        version = platform.python_version()
        status = OK if sys.version_info >= (3, 9) else FAIL
        where = f"{version} at {sys.executable} ({platform.system()} {platform.machine()})"
        self.add(section, "python", status, where, version=version)
        self.add(section, "edge-agent", INFO, __version__, version=__version__)
        for module, dists, required in PACKAGES:
            try:
                importlib.import_module(module)
            except Exception as exc:  # missing or broken: both reported
                status = FAIL if required else INFO
                need = "required" if required else "only the demo's embedded broker needs it"
                self.add(section, dists[0], status, f"does not import ({need}): {exc}")
                continue
            version = dist_version(*dists) or "unknown version"
            self.add(section, dists[0], OK, version, version=version)

    def runtimes(self) -> None:
        """Which TFLite runtimes import; tflite-runtime breaks under numpy 2."""
        section = "TFLite runtimes"
        working = []
        for module, dist in RUNTIMES:
            if importlib.util.find_spec(module) is None:
                self.add(section, module, INFO, "not installed")
                continue
            try:
                importlib.import_module(f"{module}.interpreter")
            except Exception as exc:  # e.g. built against numpy 1 under numpy 2
                self.add(section, module, WARN, f"installed but does not import: {exc}")
                continue
            version = dist_version(dist) or "unknown version"
            working.append(module)
            self.add(section, module, OK, version, version=version)
        if not working:
            self.add(section, "runtime", FAIL, "no TFLite runtime: pip install ai-edge-litert")
        numpy_version = dist_version("numpy") or "0"
        major = int(numpy_version.split(".")[0] or 0)
        if importlib.util.find_spec("tflite_runtime") is not None and major >= 2:
            detail = (
                f"numpy {numpy_version} with tflite-runtime: its last release (2.14) is built "
                "against numpy 1 and breaks under numpy >= 2; pip install 'numpy<2'"
            )
            # Listed here only for the conflict: the packages section shows its version.
            self.add(section, "numpy", WARN, detail, version=numpy_version)

    def coral(self, device: str = "auto", edgetpu_library: str = "") -> None:
        """pycoral, libedgetpu, the Edge TPUs, their temperatures and device permissions.

        Args:
            device: the configured ``model.device``; ``usb``/``pci`` make a missing
                library or device an error instead of a warning.
            edgetpu_library: the configured ``model.edgetpu_library`` ("" = default).
        """
        kind, _ = parse_device_spec(device)
        missing = FAIL if kind in ("usb", "pci") else WARN
        self._pycoral()
        edgetpu = discover().get("edgetpu")
        replaced = edgetpu is not None and edgetpu.replaces_builtin
        if replaced:
            spec = edgetpu.spec
            detail = f"plugin {spec.origin} ({spec.value}) replaces the built-in edgetpu backend"
            self.add("Edge TPU", "driver", INFO, detail)
        self._library(edgetpu_library, INFO if replaced else missing)
        try:
            if self.sys_root == "/sys" and edgetpu and hasattr(edgetpu.cls, "list_devices"):
                devices = edgetpu.cls().list_devices()  # a plugin's driver may list others
            else:
                devices = list_edge_tpus(self.sys_root)
        except Exception as exc:  # EdgeAgentError, or anything from a plugin's driver
            self.add("Edge TPU", "devices", missing, str(exc))
            devices = []
        else:
            listed = ", ".join(f"{d.type} {d.path}" for d in devices)
            if devices:
                self.add("Edge TPU", "devices", OK, f"{len(devices)}: {listed}", count=len(devices))
            else:
                detail = f"none visible: models run on the CPU (model.device = {device!r})"
                self.add("Edge TPU", "devices", missing, detail, count=0)
        for name, celsius in apex_temperatures(self.sys_root).items():
            status = WARN if celsius >= APEX_HOT_C else INFO
            hot = " (throttling)" if status == WARN else ""
            self.add("Edge TPU", name, status, f"{celsius:.1f} C{hot}", celsius=celsius)
        self._permissions()

    def _library(self, configured: str, missing: str) -> None:
        """libedgetpu (``model.edgetpu_library`` when set) loads in this process."""
        try:
            library = delegate_path(configured)
        except EdgeAgentError as exc:
            self.add("Edge TPU", "libedgetpu", FAIL, str(exc))
            return
        found = ctypes.util.find_library("edgetpu")
        where = f"{LIBRARY_KEY} = {configured!r}" if configured else (found or library)
        try:
            ctypes.CDLL(library)
            self.add("Edge TPU", "libedgetpu", OK, f"{library} loads ({where})")
        except OSError as exc:
            detail = f"{library} does not load ({exc}): {LIBEDGETPU_HINT}"
            # A library the operator named explicitly must load.
            self.add("Edge TPU", "libedgetpu", FAIL if configured else missing, detail)

    def backends(self) -> None:
        """The inference backends found: built-ins, plugins, and plugins skipped."""
        found = discover()
        for item in found.found:
            cls, spec = item.cls, item.spec
            kinds = ", ".join(sorted(cls.kinds))
            detail = f"{spec.origin}: {spec.value}, priority {cls.priority}, serves {kinds}"
            if item.replaces_builtin:
                detail += " (replaces the built-in)"
            if spec.origin != BUILTIN and cls.priority >= CpuBackend.priority:
                detail += ": ranks after the CPU, so auto tries it only if the CPU fails"
            self.add("Backends", spec.name, OK, detail, origin=spec.origin, priority=cls.priority)
        for problem in found.problems:
            detail = f"{problem.spec.origin} ({problem.spec.value}) skipped: {problem.reason}"
            self.add("Backends", problem.spec.name, WARN, detail, origin=problem.spec.origin)

    def _pycoral(self) -> None:
        """Coral's pycoral has ``pycoral.utils.edgetpu.list_edge_tpus``; PyPI's does not."""
        if importlib.util.find_spec("pycoral") is None:
            detail = "not installed (optional: edge-agent finds Edge TPUs through sysfs)"
            self.add("Edge TPU", "pycoral", INFO, detail)
            return
        try:
            edgetpu = importlib.import_module("pycoral.utils.edgetpu")
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("pycoral"):
                self.add("Edge TPU", "pycoral", WARN, f"Coral's pycoral does not import: {exc}")
                return
            edgetpu = None
        except Exception as exc:  # e.g. libedgetpu or tflite_runtime missing
            self.add("Edge TPU", "pycoral", WARN, f"Coral's pycoral does not import: {exc}")
            return
        if edgetpu is None or not hasattr(edgetpu, "list_edge_tpus"):
            detail = (
                "the installed 'pycoral' is not Coral's (the PyPI project of that name is "
                "unrelated): pip uninstall pycoral; Coral's comes from "
                "https://google-coral.github.io/py-repo/"
            )
            self.add("Edge TPU", "pycoral", WARN, detail)
            return
        version = dist_version("pycoral") or "unknown version"
        self.add("Edge TPU", "pycoral", OK, f"Coral's pycoral {version}", version=version)

    def _permissions(self) -> None:
        """The current user can open every Edge TPU device node."""
        nodes = sorted(glob.glob(os.path.join(self.dev_root, "apex_*")))
        for apex in sorted(glob.glob(os.path.join(self.sys_root, "class/apex/apex_*"))):
            node = os.path.join(self.dev_root, os.path.basename(apex))
            if node not in nodes:
                detail = f"{node} is missing although the apex driver lists {apex}"
                self.add("Permissions", os.path.basename(apex), FAIL, detail)
        for dev in sorted(glob.glob(os.path.join(self.sys_root, "bus/usb/devices/*"))):
            ids = (_read(os.path.join(dev, "idVendor")), _read(os.path.join(dev, "idProduct")))
            if ids not in USB_IDS:
                continue
            bus, num = _read(os.path.join(dev, "busnum")), _read(os.path.join(dev, "devnum"))
            if not (bus and num and bus.isdigit() and num.isdigit()):
                continue
            nodes.append(os.path.join(self.dev_root, f"bus/usb/{int(bus):03d}/{int(num):03d}"))
            if ids == ("1a6e", "089a"):
                detail = f"{dev}: firmware not loaded yet (libedgetpu loads it on first use)"
                self.add("Edge TPU", "usb firmware", INFO, detail)
        if not nodes:
            self.add("Permissions", "devices", SKIP, "no Edge TPU device nodes")
        for node in nodes:
            self._access(node)

    def _access(self, node: str) -> None:
        """One device node: read/write for this user, with owner, group and mode shown."""
        name = os.path.relpath(node, self.dev_root)
        try:
            st = os.stat(node)
        except OSError as exc:
            self.add("Permissions", name, FAIL, f"{node}: {exc.strerror or exc}")
            return
        group = _group(st.st_gid)
        mode = stat.filemode(st.st_mode)
        facts = f"{_user()}; {mode} {group}"
        if os.access(node, os.R_OK | os.W_OK):
            self.add("Permissions", name, OK, f"{node}: read/write for {facts}")
        else:
            hint = PERMISSION_HINT.format(group)
            self.add("Permissions", name, FAIL, f"{node}: no read/write for {facts}: {hint}")

    def video_devices(self) -> None:
        """V4L2 capture devices present, with their driver names."""
        found = []
        for node in sorted(glob.glob(os.path.join(self.dev_root, "video*"))):
            base = os.path.basename(node)
            label = _read(os.path.join(self.sys_root, "class/video4linux", base, "name"))
            found.append(f"{node} ({label})" if label else node)
        detail = ", ".join(found) if found else "none (/dev/video*)"
        self.add("Cameras", "v4l2", INFO, detail, devices=found)
