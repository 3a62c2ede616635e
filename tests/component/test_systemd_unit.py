"""The shipped systemd unit: its contract, `systemd-analyze`, and its sandbox for real.

The sandbox test starts a private systemd (user) manager in its own mount and
cgroup namespaces (tests/support/systemd_manager.py), so it runs on machines whose
PID 1 is not systemd and stays inside new leaf cgroups of its own; it loads a copy
of the unit that differs only in what
must differ on a test machine (ExecStart runs a probe, the user is ``nobody``) and
checks from inside every sandbox setting that the runtimes depend on: LiteRT with
XNNPACK, forkserver + shared memory, OpenCV's FFmpeg, ctypes callbacks, sd_notify.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support import sandbox_probe
from tests.support.paths import REPO, shared_file
from tests.support.systemd_manager import SYSTEMD, UserManager

UNIT = REPO / "systemd" / "edge-agent.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
HOMES = ("/root/", "/home/")  # hidden by ProtectHome=yes
TMPS = ("/tmp/", "/var/tmp/")  # replaced by PrivateTmp=yes


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Map section name -> [(key, value)] in file order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"key outside a section: {raw!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def test_unit_declares_the_service_contract() -> None:
    unit = parse_unit(UNIT.read_text())
    svc = dict(unit["Service"])  # last value wins, as in systemd (for single-valued keys)
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "RestartSec": "5",
        "KillMode": "mixed",
        "TimeoutStopSec": "20",
        "ExecStart": "/opt/edge-agent/bin/edge-agent run --config /etc/edge-agent/config.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "User": "edge-agent",
        "Group": "edge-agent",
        "SupplementaryGroups": "video plugdev apex",
        "StateDirectory": "edge-agent",
        "ConfigurationDirectory": "edge-agent",
        "RuntimeDirectory": "edge-agent",
        "DevicePolicy": "closed",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    assert {k: svc.get(k) for k in expected} == expected
    assert "PYTHONUNBUFFERED=1" in values(unit["Service"], "Environment")
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= dict(unit["Unit"]).keys()
    assert sorted(values(unit["Service"], "DeviceAllow")) == [
        "char-apex rw",
        "char-usb_device rw",
        "char-video4linux rw",
    ]
    # PrivateDevices would hide the Coral's re-enumerated USB node; ProcSubset=pid
    # hides /proc/cpuinfo and with it XNNPACK (see the comments in the unit).
    assert "PrivateDevices" not in svc
    assert "ProcSubset" not in svc
    assert dict(unit["Install"]) == {"WantedBy": "multi-user.target"}


def exposure(unit_path: Path) -> float:
    """The overall exposure score `systemd-analyze security --offline` prints."""
    out = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(unit_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert match, f"no exposure score in output:\n{out.stdout}\n{out.stderr}"
    return float(match.group(1))


@needs_analyze
def test_security_exposure_is_at_most_3() -> None:
    assert exposure(UNIT) <= 3.0


@needs_analyze
def test_exposure_parser_sees_an_unhardened_unit(tmp_path: Path) -> None:
    bare = tmp_path / "edge-agent.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    assert exposure(bare) > 9.0


def verifiable_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart's binary replaced by an existing stub, nothing else.

    `systemd-analyze verify` rightly fails on a missing executable; the stub makes
    the check about the unit itself on machines without an installation.
    """
    stub = tmp_path / "edge-agent"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    copy = tmp_path / "edge-agent.service"
    copy.write_text(text.replace("ExecStart=/opt/edge-agent/bin/edge-agent ", f"ExecStart={stub} "))
    return copy


def verify(unit_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_analyze
def test_verify_reports_nothing(tmp_path: Path) -> None:
    original = UNIT.read_text()
    copy = verifiable_copy(tmp_path, original)
    changed = set(copy.read_text().splitlines()) ^ set(original.splitlines())
    assert len(changed) == 2 and all(line.startswith("ExecStart=") for line in changed)
    out = verify(copy)
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("KillMode=mixed", "KillMode=mixed\nRestartSecs=5")
    out = verify(verifiable_copy(tmp_path, broken))
    assert "RestartSecs" in out.stdout + out.stderr


# --- the sandbox, for real -------------------------------------------------------------


@pytest.fixture(scope="module")
def user_manager() -> Iterator[UserManager]:
    if os.geteuid() != 0:
        pytest.skip("the sandbox test needs root (namespaces, cgroups, User=)")
    for tool in ("unshare", "systemctl", "mountpoint"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    if not os.access(SYSTEMD, os.X_OK):
        pytest.skip(f"{SYSTEMD} not installed")
    # Not under /tmp: PrivateTmp= would hide the unit's own directories there.
    base = Path("/run") / f"edge-agent-unit-test-{uuid.uuid4().hex[:8]}"
    base.mkdir(mode=0o755)
    manager = UserManager(base)
    try:
        try:
            manager.start()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot run a private systemd manager here: {exc}")
        yield manager
    finally:
        manager.stop()
        shutil.rmtree(base)


def sandbox_python() -> str:
    """An interpreter the sandboxed service can execute (ProtectHome hides /root, /home)."""
    exe = os.path.realpath(sys.executable)
    if not exe.startswith(HOMES):
        return exe
    system = f"/usr/bin/python3.{sys.version_info.minor}"
    if not os.access(system, os.X_OK):
        pytest.skip(f"{exe} is under a home directory and {system} does not exist")
    return system


def reference_output(model: Path, x: np.ndarray, runtime: str) -> list:
    """The model's output computed here, outside any sandbox."""
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        from tflite_runtime.interpreter import Interpreter
    return sandbox_probe.invoke(Interpreter, str(model), x)


def visible_paths(*paths: str) -> str:
    """Test-only BindReadOnlyPaths= lines for paths PrivateTmp= would hide.

    A clone (and its venv) may live anywhere, /tmp included; binding what the probe
    needs back in keeps the unit itself unchanged.
    """
    hidden = sorted({p for p in paths if p.startswith(TMPS)})
    return "".join(f"BindReadOnlyPaths={p}\n" for p in hidden)


def probe_files(base: Path, model: Path) -> tuple[Path, Path]:
    """The probe script and the model copied to `base`, which the sandbox sees."""
    probe = base / "sandbox_probe.py"
    shutil.copyfile(sandbox_probe.__file__, probe)
    copied = base / model.name
    shutil.copyfile(model, copied)
    for path in (probe, copied):
        path.chmod(0o644)
    return probe, copied


def sandboxed_copy(base: Path, model: Path, port: int) -> str:
    """The unit, changed only where a test machine must differ from a device."""
    nobody = pwd.getpwnam("nobody")
    groups = [g for g in ("video", "plugdev", "apex") if _group_exists(g)]
    purelib = sysconfig.get_paths()["purelib"]
    if purelib.startswith(HOMES):
        pytest.skip(f"ProtectHome=yes hides the installed packages in {purelib}")
    probe, model = probe_files(base, model)
    substitutions = {
        "ExecStart=/opt/edge-agent/bin/edge-agent run --config /etc/edge-agent/config.toml": (
            f"ExecStart={sandbox_python()} {probe} {model} {base}/x.npy {port}\n"
            f"Environment=PYTHONPATH={purelib}\n"
            f"{visible_paths(purelib, os.path.realpath(purelib), sandbox_python())}"
            # The manager has no journal to send the probe's output to.
            f"StandardOutput=append:{base}/service.log\nStandardError=inherit"
        ),
        "User=edge-agent": "User=nobody",
        "Group=edge-agent": f"Group={grp.getgrgid(nobody.pw_gid).gr_name}",
        "SupplementaryGroups=video plugdev apex": f"SupplementaryGroups={' '.join(groups)}",
        # RemoveIPC would also delete other software's IPC objects owned by nobody.
        "RemoveIPC=yes": "RemoveIPC=no",
    }
    text = UNIT.read_text()
    for old, new in substitutions.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def test_sandbox_runs_the_runtimes(user_manager: UserManager) -> None:
    model = shared_file("models/mobilenet_v2_1.0_224_quant.tflite")
    base = user_manager.base
    cat = cv2.cvtColor(cv2.imread(str(shared_file("images/cat.bmp"))), cv2.COLOR_BGR2RGB)
    x = cv2.resize(cat, (224, 224), interpolation=cv2.INTER_AREA)[None]
    np.save(base / "x.npy", x)
    (base / "x.npy").chmod(0o644)
    # The probe connects and sends while we wait for it; the kernel queues both.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]

    (user_manager.units / "edge-agent.service").write_text(sandboxed_copy(base, model, port))
    user_manager.systemctl("daemon-reload")
    log = base / "service.log"
    try:
        user_manager.systemctl("start", "edge-agent.service", timeout=120)  # waits for READY=1
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{user_manager.status('edge-agent.service')}") from exc
    deadline = time.monotonic() + 120
    while True:
        show = user_manager.systemctl(
            "show", "-p", "ActiveState", "-p", "Result", "-p", "NRestarts", "edge-agent.service"
        )
        props = dict(line.split("=", 1) for line in show.split())
        if props["ActiveState"] in ("inactive", "failed") or props["NRestarts"] != "0":
            break
        assert time.monotonic() < deadline, f"probe still running: {props}"
        time.sleep(0.1)
    assert props == {"ActiveState": "inactive", "Result": "success", "NRestarts": "0"}, (
        log.read_text() if log.exists() else "no output"
    )

    with listener, listener.accept()[0] as conn:
        assert conn.recv(64) == b"edge-agent-probe"  # AF_INET reaches the network
    # StateDirectory= of a user unit lies below ~/.config (~/.local/state on systemd >= 254).
    report = json.loads(next(base.glob("home/**/edge-agent/probe.json")).read_text())
    assert report["uid"] == pwd.getpwnam("nobody").pw_uid
    assert report["watchdog_usec"] == "30000000"
    assert report["usr_write_errno"] == errno.EROFS  # ProtectSystem=strict
    assert report["root_home_errno"] == errno.EACCES  # ProtectHome=yes
    assert report["cpuinfo_readable"] is True  # no ProcSubset=pid
    # Bit-identical to the unsandboxed run: the same (XNNPACK) kernels ran.
    assert report["litert_worker"] == reference_output(model, x, "litert")
    if report["tflite"] is not None:
        assert report["tflite"] == reference_output(model, x, "tflite")
    assert report["ctypes_callback"] is True
    assert report["video_frames"] == 10
    assert report["netlink_errno"] == 0
    assert report["packet_errno"] == errno.EAFNOSUPPORT  # RestrictAddressFamilies=
    assert report["wx_mmap_errno"] == errno.EPERM  # MemoryDenyWriteExecute=yes
    assert report["setgroups_errno"] == errno.EPERM  # no capabilities, ~@privileged
    assert report["sched_batch_errno"] == 0  # the frame path's policy (scheduling.py)
    assert report["sched_other_errno"] == 0  # and the worker's


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
