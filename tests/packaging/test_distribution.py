"""The sdist and wheel `python -m build` makes: complete, licensed, and passing `twine check`.

The sdist must carry everything needed to run the test suite and deploy (tests/,
deploy/, systemd/, the Makefile, the docs, the fixture models); the wheel the package,
the demo's data files and the LICENSE. ``EDGE_AGENT_DIST_DIR`` names an already built
dist directory (``.ci/dist-check`` sets it); otherwise the test builds one, which needs
the ``build`` package (skipped without it).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.support.paths import REPO

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]

SDIST_MUST_HAVE = (
    "LICENSE",
    "README.md",
    "CONTRIBUTING.md",
    "Makefile",
    "pyproject.toml",
    "setup.cfg",
    "setup.py",
    "ruff.toml",
    ".ci/run",
    ".ci/matrix",
    "deploy/install.sh",
    "deploy/config.example.toml",
    "deploy/LIBEDGETPU.md",
    "systemd/edge-agent.service",
    "docs/BENCHMARKS.md",
    "models/demo/color_blobs.tflite",
    "models/make_models.py",
    "tests/conftest.py",
    "tests/support/paths.py",
    "tests/support/sandbox_probe.py",
    "tests/fixtures/models/color_uint8.tflite",
)
WHEEL_MUST_HAVE = (
    "edge_agent/__init__.py",
    "edge_agent/cli/__init__.py",
    "edge_agent/tools/demo/brokers.py",
)
WHEEL_DATA = ("share/edge-agent/demo/color_blobs.tflite", "share/edge-agent/demo/clip.avi")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding one sdist and one wheel of this tree."""
    given = os.environ.get("EDGE_AGENT_DIST_DIR")
    if given:
        return Path(given)
    # build.__main__: a checkout's build/ output directory also imports as "build".
    if importlib.util.find_spec("build.__main__") is None:
        pytest.skip("the build package is not installed (pip install build)")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(REPO)],
        cwd=out,  # not the checkout, whose build/ directory would shadow the package
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # No legacy fallback: pyproject.toml names the PEP 517 backend.
    assert "deprecat" not in (proc.stdout + proc.stderr).lower(), proc.stderr
    return out


def only(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def sdist_names(dist: Path) -> set[str]:
    """Paths inside the sdist, relative to its top directory."""
    with tarfile.open(only(dist, "*.tar.gz")) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def test_sdist_carries_what_the_tests_and_the_deployment_need(dist: Path) -> None:
    names = sdist_names(dist)
    assert [path for path in SDIST_MUST_HAVE if path not in names] == []
    tree = {
        str(path.relative_to(REPO))
        for path in (REPO / "tests").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert sorted(tree - names) == []  # every test file, fixture and support module


def test_wheel_has_the_package_the_demo_files_and_the_license(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "*.whl")) as wheel:
        names = set(wheel.namelist())
    assert [path for path in WHEEL_MUST_HAVE if path not in names] == []
    data = {name.split(".data/data/", 1)[1] for name in names if ".data/data/" in name}
    assert [path for path in WHEEL_DATA if path not in data] == []
    assert any(name.endswith(".dist-info/licenses/LICENSE") or name.endswith(
        ".dist-info/LICENSE") for name in names)  # fmt: skip
    assert not any(name.startswith("tests/") for name in names)


def test_twine_check_passes(dist: Path) -> None:
    if importlib.util.find_spec("twine") is None:
        pytest.skip("twine is not installed (pip install twine)")
    files = [str(only(dist, "*.tar.gz")), str(only(dist, "*.whl"))]
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout
