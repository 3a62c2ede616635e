"""deploy/install.sh into a real Debian: a debootstrap chroot with real useradd, getent,
systemctl and udevadm (opt-in: ``EDGE_AGENT_CHROOT_TEST=1``; the fake-root tests in
test_installer.py run everywhere)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import edge_agent
from tests.component.test_installer import PRINT_VERSION, SKIP_IN_COPY, build_tools, offline_pip
from tests.support.paths import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="install.sh needs root and the shadow tools (useradd --prefix)",
)

CHROOT_PACKAGES = ("python3", "python3-venv", "systemd", "udev", "procps")
CHROOT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def debian_chroot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Debian bookworm minbase root with python3-venv, systemd, udev and procps.

    Built once with debootstrap (about 40 s and 300 MB) into a tarball cached at
    $EDGE_AGENT_CHROOT_CACHE, then unpacked per test run (a few seconds).
    """
    if os.environ.get("EDGE_AGENT_CHROOT_TEST") != "1":
        pytest.skip("set EDGE_AGENT_CHROOT_TEST=1 to install into a debootstrap chroot")
    if shutil.which("debootstrap") is None or shutil.which("unshare") is None:
        pytest.skip("needs debootstrap and unshare")
    cache = Path(os.environ.get("EDGE_AGENT_CHROOT_CACHE", "/var/tmp/edge-agent-chroot.tar"))
    if not cache.exists():
        build = tmp_path_factory.mktemp("debootstrap")
        mirror = os.environ.get("EDGE_AGENT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(CHROOT_PACKAGES)}",
                "bookworm",
                str(build),
                mirror,
            ],
            capture_output=True,
            timeout=900,
            check=True,
        )
        partial = cache.with_name(cache.name + ".part")
        subprocess.run(["tar", "-C", str(build), "-cf", str(partial), "."], timeout=300, check=True)
        partial.replace(cache)
        shutil.rmtree(build)
    root = tmp_path_factory.mktemp("chroot")
    subprocess.run(["tar", "-C", str(root), "-xf", str(cache)], timeout=300, check=True)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def in_chroot(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command inside the chroot with a clean environment and offline pip."""
    return subprocess.run(
        [
            "chroot",
            str(root),
            "/usr/bin/env",
            "-i",
            CHROOT_PATH,
            f"EDGE_AGENT_PIP_ARGS={offline_pip('/wheels')}",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_install_and_purge_in_a_debian_chroot(debian_chroot: Path) -> None:
    root = debian_chroot
    shutil.copytree(REPO, root / "src", ignore=SKIP_IN_COPY)
    shutil.copytree(build_tools(), root / "wheels")
    out = in_chroot(root, "bash", "/src/deploy/install.sh")
    assert out.returncode == 0, out.stdout + out.stderr
    # The only complaint on a complete system: no Edge TPU runtime in this chroot.
    assert [line for line in out.stderr.splitlines() if line.startswith(("warning", "error"))] == [
        "warning: libedgetpu.so.1 not found: models run on the CPU until the Debian package"
        " libedgetpu1-std is installed (Coral's apt repository or the community build:"
        " deploy/LIBEDGETPU.md)"
    ]
    groups = in_chroot(root, "id", "-nG", "edge-agent").stdout.split()
    assert sorted(groups) == ["apex", "edge-agent", "plugdev", "video"]
    assert in_chroot(root, "systemctl", "is-enabled", "edge-agent.service").stdout == "enabled\n"
    mode = in_chroot(
        root,
        "stat",
        "-c",
        "%U:%G %a",
        "/etc/edge-agent",
        "/etc/edge-agent/config.toml",
        "/var/lib/edge-agent",
    )
    assert mode.stdout.splitlines() == [
        "root:edge-agent 750",
        "edge-agent:edge-agent 600",
        "edge-agent:edge-agent 750",
    ]
    # The installed unit verifies as is: its ExecStart and ExecReload binaries exist here.
    verify = in_chroot(root, "systemd-analyze", "verify", "/lib/systemd/system/edge-agent.service")
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    version = in_chroot(root, "/opt/edge-agent/bin/python", "-I", "-c", PRINT_VERSION)
    assert version.stdout.split()[0] == edge_agent.__version__
    # udev 252 parses the installed rules with the groups now present: no diagnostics.
    udev = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"mount -t sysfs sysfs {root}/sys && mount -t proc proc {root}/proc && "
            f"exec chroot {root} udevadm test /sys/class/mem/null",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    ours = [line for line in (udev.stdout + udev.stderr).splitlines() if "edge-agent" in line]
    assert ours == ["Reading rules file: /etc/udev/rules.d/99-edge-agent-coral.rules"]

    purged = in_chroot(root, "bash", "/src/deploy/install.sh", "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert in_chroot(root, "getent", "passwd", "edge-agent").returncode == 2
    assert in_chroot(root, "getent", "group", "apex").returncode == 0
    for path in (
        "/opt/edge-agent",
        "/etc/edge-agent",
        "/var/lib/edge-agent",
        "/etc/systemd/system/multi-user.target.wants/edge-agent.service",
    ):
        assert not os.path.lexists(f"{root}{path}"), path
