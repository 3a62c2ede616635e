"""Finding Edge TPUs: pycoral when importable, else sysfs (PCIe) and USB IDs."""

from __future__ import annotations

import glob
import logging
import os
import platform
from typing import NamedTuple

logger = logging.getLogger(__name__)

# The Coral USB Accelerator enumerates as 1a6e:089a (Global Unichip) until libedgetpu
# loads its firmware, then as 18d1:9302 (Google).
USB_IDS = {("1a6e", "089a"): "usb (firmware not loaded)", ("18d1", "9302"): "usb"}

_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


class TpuDevice(NamedTuple):
    """One Edge TPU: ``type`` is "usb" or "pci"; ``path`` a sysfs/dev path when known."""

    type: str
    path: str


def delegate_library(system: str | None = None) -> str:
    """The libedgetpu file name for this platform (Linux, macOS, Windows)."""
    return _LIBRARIES.get(system or platform.system(), "libedgetpu.so.1")


def parse_device_spec(spec: str) -> tuple[str, int | None]:
    """Split a device spec into kind and index.

    Args:
        spec: ``auto``, ``cpu``, ``usb``, ``usb:N``, ``pci`` or ``pci:N``.

    Returns:
        (kind, index or None).

    Raises:
        ValueError: on anything else.
    """
    kind, colon, index = spec.partition(":")
    if kind not in ("auto", "cpu", "usb", "pci") or (colon and kind in ("auto", "cpu")):
        raise ValueError(f"invalid device {spec!r}: expected auto, cpu, usb[:N] or pci[:N]")
    if colon and not (index.isascii() and index.isdigit()):  # "usb:" is not "usb"
        raise ValueError(f"invalid device {spec!r}: the index must be a number")
    return kind, int(index) if index else None


def _sysfs_usb(root: str) -> list[TpuDevice]:
    """USB devices whose idVendor/idProduct match the Coral accelerator."""
    found = []
    for dev in sorted(glob.glob(os.path.join(root, "bus/usb/devices/*"))):
        try:
            with open(os.path.join(dev, "idVendor")) as f:
                vendor = f.read().strip()
            with open(os.path.join(dev, "idProduct")) as f:
                product = f.read().strip()
        except OSError:
            continue
        if (vendor, product) in USB_IDS:
            found.append(TpuDevice("usb", dev))
    return found


def _sysfs_pci(root: str) -> list[TpuDevice]:
    """PCIe/M.2 Edge TPUs exposed by the apex driver."""
    return [TpuDevice("pci", p) for p in sorted(glob.glob(os.path.join(root, "class/apex/apex_*")))]


def list_edge_tpus(sys_root: str = "/sys") -> list[TpuDevice]:
    """List the Edge TPUs this machine shows.

    pycoral's ``list_edge_tpus()`` is used when Coral's pycoral is importable (never the
    unrelated PyPI package of that name: we only call it if it has that function);
    otherwise sysfs is read.

    Args:
        sys_root: sysfs mount point (tests pass a fake tree).

    Returns:
        The devices, PCIe first, in a stable order.
    """
    if sys_root == "/sys":
        try:
            from pycoral.utils.edgetpu import list_edge_tpus as coral_list

            return [TpuDevice(d["type"], d["path"]) for d in coral_list()]
        except Exception:  # not installed, not Coral's package, or libedgetpu missing
            pass
    return _sysfs_pci(sys_root) + _sysfs_usb(sys_root)


def apex_temperatures(sys_root: str = "/sys") -> dict[str, float]:
    """Temperatures in degrees C of PCIe Edge TPUs (``/sys/class/apex/*/temp`` is milli-C)."""
    temps = {}
    for path in sorted(glob.glob(os.path.join(sys_root, "class/apex/apex_*/temp"))):
        try:
            with open(path) as f:
                temps[os.path.basename(os.path.dirname(path))] = int(f.read().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return temps
