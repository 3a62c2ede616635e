"""Every runtime dependency has a wheel for the Pi (arm64) and for x86_64, per CPython.

pip resolves ``install_requires`` from setup.cfg (and the ``[tflite]`` extra) for a
foreign platform with ``--only-binary=:all: --platform ... --python-version ...``: the
same resolution ``pip download`` does, run as ``pip install --dry-run --report`` so
that only the metadata is fetched, not hundreds of MB of wheels. Raspberry Pi OS
bookworm (arm64) has glibc 2.36, so every ``manylinux_2_X`` up to 2.36 is accepted.

Skipped when no package registry answers. ``python -m tests.packaging.test_wheels_resolve``
prints the table the README's platform section is made from.
"""

from __future__ import annotations

import configparser
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import pytest
from packaging.requirements import Requirement

from tests.support.paths import REPO

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(300)]

GLIBC_PI = 36  # Raspberry Pi OS bookworm (Debian 12)
PYTHONS = ("3.9", "3.11", "3.13")
ARCHES = ("aarch64", "x86_64")
SHOWN = ("numpy", "opencv-python-headless", "ai-edge-litert", "tflite-runtime")


class Resolved(NamedTuple):
    """One resolved distribution: name, version and the wheel file pip picked."""

    name: str
    version: str
    wheel: str


def requirements(extra: str = "") -> list[str]:
    """install_requires (plus one extra's requirements) from setup.cfg."""
    cfg = configparser.ConfigParser(inline_comment_prefixes=("#",))
    cfg.read(REPO / "setup.cfg")

    def lines(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip()]

    reqs = lines(cfg["options"]["install_requires"])
    if extra:
        reqs += lines(cfg["options.extras_require"][extra])
    return reqs


def for_python(reqs: list[str], python: str) -> list[str]:
    """The requirements that apply to CPython ``python``, markers evaluated and dropped.

    pip evaluates the markers of command-line requirements against the interpreter it
    runs on, not against ``--python-version``.
    """
    applied = []
    for text in reqs:
        req = Requirement(text)
        env = {"python_version": python, "python_full_version": f"{python}.0"}
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            applied.append(str(req))
    return applied


def platforms(arch: str, glibc: int = GLIBC_PI) -> list[str]:
    """The manylinux tags a glibc-2.<glibc> system accepts, newest first."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 4, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def resolve(reqs: list[str], python: str, tags: list[str]) -> list[Resolved]:
    """Resolve ``reqs`` for CPython ``python`` on ``tags``, wheels only.

    Raises:
        AssertionError: pip found no wheel for some requirement (its message included).
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--quiet", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", python, "--target", str(Path(tmp) / "t"),
            "--report", str(report),
            *(arg for tag in tags for arg in ("--platform", tag)),
            *for_python(reqs, python),
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
        assert out.returncode == 0, f"no wheel set for CPython {python} {tags[0]}:\n{out.stderr}"
        items = json.loads(report.read_text())["install"]
    return [
        Resolved(
            item["metadata"]["name"],
            item["metadata"]["version"],
            os.path.basename(urlparse(item["download_info"]["url"]).path),
        )
        for item in items
    ]


def registry_reachable() -> bool:
    """Whether pypi.org answers (the resolution needs its index)."""
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        return False
    return True


needs_registry = pytest.mark.skipif(
    os.environ.get("EDGE_AGENT_OFFLINE") == "1" or not registry_reachable(),
    reason="no package registry reachable (pypi.org:443)",
)


def at_least(python: str, minimum: tuple[int, int]) -> bool:
    """``"3.13"`` >= (3, 12), compared as numbers ("3.9" < "3.12")."""
    return tuple(int(part) for part in python.split(".")) >= minimum


def names(resolved: list[Resolved]) -> set[str]:
    return {r.name.lower().replace("_", "-") for r in resolved}


@needs_registry
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("python", PYTHONS)
def test_plain_install_has_a_wheel_for_every_dependency(python: str, arch: str) -> None:
    resolved = resolve(requirements(), python, platforms(arch))
    assert {"numpy", "opencv-python-headless", "ai-edge-litert", "paho-mqtt"} <= names(resolved)
    assert all(r.wheel.endswith(".whl") for r in resolved), resolved
    numpy = next(r for r in resolved if r.name == "numpy")
    if at_least(python, (3, 12)):
        assert int(numpy.version.split(".")[0]) >= 2


@needs_registry
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("python", ("3.9", "3.11"))
def test_tflite_extra_has_a_wheel_for_every_dependency(python: str, arch: str) -> None:
    resolved = resolve(requirements("tflite"), python, platforms(arch))
    assert "tflite-runtime" in names(resolved)
    numpy = next(r for r in resolved if r.name == "numpy")
    assert numpy.version.startswith("1."), numpy  # tflite-runtime 2.14 breaks on numpy 2


@needs_registry
@pytest.mark.parametrize("package", ("ai-edge-litert", "opencv-python-headless"))
def test_32_bit_pi_os_has_no_wheel_on_pypi(package: str) -> None:
    # Raspberry Pi OS armv7: the README points to the 64-bit OS (or piwheels) instead.
    with pytest.raises(AssertionError, match="no wheel set"):
        resolve([package], "3.11", ["linux_armv7l", *platforms("armv7l")])


def main() -> None:
    """Print the resolved matrix as a Markdown table (for the README)."""
    print("| platform | CPython | set | numpy | OpenCV | LiteRT | tflite-runtime |")
    print("|---|---|---|---|---|---|---|")
    for arch in ARCHES:
        for python in PYTHONS:
            for extra in ("", "tflite"):
                if extra and at_least(python, (3, 12)):
                    continue
                try:
                    found = resolve(requirements(extra), python, platforms(arch))
                except AssertionError:
                    found = []
                got = {r.name.lower(): r.version for r in found}
                cells = [got.get(n, "none") for n in SHOWN]
                label = "[tflite]" if extra else "plain"
                row = [f"manylinux_2_{GLIBC_PI}_{arch}", python, label, *cells]
                print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
