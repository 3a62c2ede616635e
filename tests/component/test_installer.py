"""deploy/install.sh, run for real into a fake root (every path below EDGE_AGENT_ROOT).

Users and groups go to the fake root's etc/passwd and etc/group through
useradd/groupadd --prefix, the service is enabled with `systemctl --root`, and pip
installs the package into the fake root's /opt/edge-agent without touching the
network (EDGE_AGENT_PIP_ARGS="--no-deps --no-build-isolation --no-index"). The
installer runs from a copy of the repository, so the test can also check that it
leaves its source tree clean.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import edge_agent
from tests.support.paths import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="install.sh needs root and the shadow tools (useradd --prefix)",
)
PRINT_VERSION = "import edge_agent as e; print(e.__version__, e.__file__)"
# pyproject.toml names the build backend, so pip builds in an isolated environment;
# offline, its build requirements come from a local wheelhouse (see build_tools()).
OFFLINE_PIP = "--no-deps --no-index --find-links {wheels}"
BUILD_TOOLS = ("setuptools>=70.1",)


@functools.cache
def build_tools() -> str:
    """A directory holding wheels of the build requirements, fetched once per machine."""
    wheels = Path(tempfile.gettempdir()) / f"edge-agent-build-tools-{os.getuid()}"
    wheels.mkdir(exist_ok=True)
    if len(list(wheels.glob("*.whl"))) < len(BUILD_TOOLS):
        out = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps"]
            + ["-d", str(wheels), *BUILD_TOOLS],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode != 0:
            pytest.skip(f"cannot fetch the build requirements {BUILD_TOOLS}: {out.stderr[-300:]}")
    return str(wheels)


def offline_pip(wheels: str = "") -> str:
    """EDGE_AGENT_PIP_ARGS for an offline install with the build tools in ``wheels``."""
    return OFFLINE_PIP.format(wheels=wheels or build_tools())


# What .gitignore keeps out of a clone, and the tests: `make test-matrix` puts one venv per
# CPython in the checkout (.venv-matrix, gigabytes), which a copy per test would fill a disk with.
SKIP_IN_COPY = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "tests",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
)


def fake_root(path: Path) -> Path:
    """A root with just the account databases of a fresh Debian (video, plugdev)."""
    etc = path / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\nvideo:x:44:\nplugdev:x:46:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nvideo:!::\nplugdev:!::\n")
    return path


def install(tree: Path, root: Path, *args: str, pip_args: str = ""):
    """Run the copy's install.sh into ``root`` (offline pip unless ``pip_args``)."""
    pip_args = pip_args or offline_pip()
    env = dict(os.environ, EDGE_AGENT_PIP_ARGS=pip_args, PIP_CONFIG_FILE=os.devnull)
    env.pop("EDGE_AGENT_ROOT", None)
    return subprocess.run(
        ["bash", str(tree / "deploy" / "install.sh"), "--root", str(root), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def installed_version(root: Path) -> str:
    """edge_agent.__version__ as the installed venv sees it (-I: not from the cwd)."""
    out = subprocess.run(
        [root / "opt/edge-agent/bin/python", "-I", "-c", PRINT_VERSION],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    version, module = out.stdout.split()
    assert module.startswith(str(root / "opt/edge-agent/lib/"))
    return version


def entry(root: Path, database: str, name: str) -> list[str] | None:
    """The fields of NAME's line in the fake root's etc/passwd or etc/group."""
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


def snapshot(root: Path, *tops: str) -> dict[str, tuple[int, int, int, str]]:
    """path -> (mode, uid, gid, sha256 or link target) for everything below ``tops``."""
    files = {}
    for top in tops:
        for path in sorted((root / top).rglob("*")):
            st = path.lstat()
            if path.is_symlink():
                content = os.readlink(path)
            elif path.is_file():
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = ""
            files[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, content)
    return files


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the repository without tests, venv and VCS data."""
    copy = tmp_path / "src"
    shutil.copytree(REPO, copy, ignore=SKIP_IN_COPY)
    return copy


def test_install_upgrade_uninstall_purge(tree: Path, tmp_path: Path) -> None:
    root = fake_root(tmp_path / "root")
    first = install(tree, root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "==> creating system user edge-agent (groups video,plugdev,apex)" in first.stdout

    # The account: a system user with no login, in the device groups.
    user = entry(root, "passwd", "edge-agent")
    group = entry(root, "group", "edge-agent")
    assert user and group
    uid, gid = int(user[2]), int(group[2])
    assert user[3:] == [str(gid), "edge-agent daemon", "/var/lib/edge-agent", "/usr/sbin/nologin"]
    assert uid < 1000
    for name in ("video", "plugdev", "apex"):
        members = entry(root, "group", name)
        assert members and members[3].split(",") == ["edge-agent"], name

    # Unit, rules, config and directories, with their owners and modes.
    unit = root / "lib/systemd/system/edge-agent.service"
    assert unit.read_bytes() == (REPO / "systemd/edge-agent.service").read_bytes()
    rules = root / "etc/udev/rules.d/99-edge-agent-coral.rules"
    assert rules.read_bytes() == (REPO / "deploy/udev/99-edge-agent-coral.rules").read_bytes()
    wants = root / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    assert os.readlink(wants) == "/lib/systemd/system/edge-agent.service"
    config = root / "etc/edge-agent/config.toml"
    assert config.read_bytes() == (REPO / "deploy/config.example.toml").read_bytes()
    owner = {
        p: (p.stat().st_mode & 0o7777, p.stat().st_uid, p.stat().st_gid)
        for p in (config, config.parent, root / "var/lib/edge-agent")
    }
    assert owner == {
        config: (0o600, uid, gid),
        config.parent: (0o750, 0, gid),
        root / "var/lib/edge-agent": (0o750, uid, gid),
    }

    # The program: a venv that imports this version, its entry point, the model fetcher.
    venv = root / "opt/edge-agent"
    assert installed_version(root) == edge_agent.__version__
    assert os.access(venv / "bin/edge-agent", os.X_OK)
    listing = subprocess.run(
        [venv / "bin/edge-agent-fetch-models", "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert listing.stdout == (REPO / "models/zoo.sha256").read_text()
    assert not list(tree.glob("*.egg-info")) and not (tree / "build").exists()
    assert "libedgetpu.so.1 not found" in first.stderr
    assert "the Debian package libedgetpu1-std" in first.stderr

    # Second run: an upgrade in place. The admin's config survives, nothing else moves.
    config.write_text("# site config\n")
    config.chmod(0o644)
    before = snapshot(root, "etc", "var", "lib")
    second = install(tree, root)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "==> reusing virtualenv" in second.stdout
    assert f"==> keeping existing {config}" in second.stdout
    assert f"warning: {config} is world-readable" in second.stderr
    assert snapshot(root, "etc", "var", "lib") == before
    assert config.read_text() == "# site config\n"

    # Uninstall: program, unit, rules and enablement go; config, state and user stay.
    (root / "var/lib/edge-agent/spool.db").write_text("state")
    removed = install(tree, root, "--uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    for path in (unit, rules, wants, venv):
        assert not os.path.lexists(path), path
    assert config.read_text() == "# site config\n"
    assert (root / "var/lib/edge-agent/spool.db").read_text() == "state"
    assert entry(root, "passwd", "edge-agent")

    # Purge: config, state, user and its group go; the shared device groups stay.
    purged = install(tree, root, "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not (root / "etc/edge-agent").exists() and not (root / "var/lib/edge-agent").exists()
    assert entry(root, "passwd", "edge-agent") is None
    assert entry(root, "group", "edge-agent") is None
    apex = entry(root, "group", "apex")
    assert apex and apex[3] == ""  # kept, now without members


def test_failed_extras_are_not_fatal(tmp_path: Path, tree: Path) -> None:
    # A package whose extras need a distribution no index has: the base still installs.
    package = tmp_path / "pkg"
    (package / "edge_agent").mkdir(parents=True)
    (package / "edge_agent" / "__init__.py").write_text('__version__ = "9.9.9"\n')
    (package / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(name='edge-agent', version='9.9.9', packages=['edge_agent'],\n"
        "      extras_require={'tflite': ['edge-agent-missing-dep'], 'systemd': []})\n"
    )
    root = fake_root(tmp_path / "root")
    out = install(tree, root, "--source", str(package), pip_args="--no-build-isolation --no-index")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warning: installing with the extras failed" in out.stderr
    assert "warning: optional extra [tflite] not installed" in out.stderr
    assert "optional extra [systemd]" not in out.stderr
    assert installed_version(root) == "9.9.9"


def test_python_under_a_home_directory_is_refused_before_any_change(
    tmp_path: Path, tree: Path
) -> None:
    python = os.path.realpath(sys.executable)
    if not python.startswith(("/root/", "/home/")):
        pytest.skip(f"needs an interpreter under /root or /home; this one is {python}")
    root = fake_root(tmp_path / "root")
    passwd = (root / "etc/passwd").read_text()
    out = install(tree, root, "--python", python)
    assert out.returncode == 1
    assert out.stderr == (
        f"error: {python} is {python}: the unit's ProtectHome=yes hides it from the service;"
        " use a system python such as /usr/bin/python3\n"
    )
    assert (root / "etc/passwd").read_text() == passwd
    assert sorted(p.name for p in root.iterdir()) == ["etc"]


def test_unknown_option(tmp_path: Path, tree: Path) -> None:
    out = install(tree, fake_root(tmp_path / "root"), "--frobnicate")
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == "error: unknown option: --frobnicate"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_is_clean() -> None:
    out = subprocess.run(
        ["shellcheck", str(REPO / "deploy/install.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (out.returncode, out.stdout) == (0, "")
