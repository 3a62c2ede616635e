"""deploy/udev/99-edge-agent-coral.rules: syntax, and which devices it gives to whom.

udev's own checker (`udevadm verify`) exists from systemd 254 on and is used when
installed; the parser below applies udev's key/operator rules everywhere, and a
small evaluator shows what the rules do to real Coral device events.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO

RULES = REPO / "deploy" / "udev" / "99-edge-agent-coral.rules"
UNIT = REPO / "systemd" / "edge-agent.service"

MATCH_ONLY = {"ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER",
              "DRIVERS", "ATTRS", "TAGS", "TEST", "PROGRAM", "RESULT", "CONST"}  # fmt: skip
ASSIGN_ONLY = {"OWNER", "GROUP", "MODE", "RUN", "LABEL", "GOTO", "OPTIONS", "SECLABEL"}
EITHER = {"NAME", "SYMLINK", "ATTR", "SYSCTL", "ENV", "TAG", "IMPORT"}
NEEDS_ATTRIBUTE = {"ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "SECLABEL", "IMPORT"}
MAY_HAVE_ATTRIBUTE = NEEDS_ATTRIBUTE | {"TEST", "RUN"}  # TEST{mode}, RUN{type}
TOKEN = re.compile(r'\s*([A-Z]+)(?:\{([^}]+)\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')


def parse(text: str) -> list[list[tuple[str, str | None, str, str]]]:
    """Parse rules text into rules of (key, attribute, operator, value) tokens.

    Raises:
        ValueError: a line is not valid udev rule syntax (message names the line).
    """
    rules = []
    for number, line in enumerate(text.replace("\\\n", "").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens, pos = [], 0
        while pos < len(line):
            match = TOKEN.match(line, pos)
            if not match:
                raise ValueError(f"line {number}: cannot parse from {line[pos:]!r}")
            key, attribute, op, value = match.groups()
            if key not in MATCH_ONLY | ASSIGN_ONLY | EITHER:
                raise ValueError(f"line {number}: unknown key {key}")
            if attribute is None and key in NEEDS_ATTRIBUTE:
                raise ValueError(f"line {number}: {key} needs {{attribute}}")
            if attribute is not None and key not in MAY_HAVE_ATTRIBUTE:
                raise ValueError(f"line {number}: {key} takes no {{attribute}}")
            is_match = op in ("==", "!=")
            if (key in MATCH_ONLY and not is_match) or (key in ASSIGN_ONLY and is_match):
                raise ValueError(f"line {number}: operator {op} not valid for {key}")
            tokens.append((key, attribute, op, value))
            pos = match.end()
        if not any(op in ("==", "!=") for _, _, op, _ in tokens):
            raise ValueError(f"line {number}: rule matches every device")
        rules.append(tokens)
    return rules


def apply(rules: list, device: dict[str, str]) -> dict[str, str]:
    """What the rules assign to a device event (``device`` maps KEY or KEY{attr} to values)."""
    assigned: dict[str, str] = {}
    for rule in rules:
        for key, attribute, op, value in rule:
            name = f"{key}{{{attribute}}}" if attribute else key
            if op in ("==", "!="):
                if key == "TEST":  # the device has this sysfs file
                    hit = value in device.get("TEST", "").split()
                else:
                    hit = any(
                        fnmatch.fnmatchcase(device.get(name, ""), p) for p in value.split("|")
                    )
                if hit != (op == "=="):
                    break
        else:
            for key, attribute, op, value in rule:
                if op not in ("==", "!="):
                    assigned[f"{key}{{{attribute}}}" if attribute else key] = value
    return assigned


def usb(vendor: str, product: str, devtype: str = "usb_device") -> dict[str, str]:
    return {"SUBSYSTEM": "usb", "ENV{DEVTYPE}": devtype, "ATTR{idVendor}": vendor,
            "ATTR{idProduct}": product, "TEST": "power/control"}  # fmt: skip


def test_rules_parse() -> None:
    assert len(parse(RULES.read_text())) == 4


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('SUBSYSTEM=="usb", ATTRX{idVendor}=="1a6e", MODE="0660"', "unknown key ATTRX"),
        ('SUBSYSTEM="apex", GROUP="apex"', "operator = not valid for SUBSYSTEM"),
        ('SUBSYSTEM=="usb", MODE=="0660"', "operator == not valid for MODE"),
        ('SUBSYSTEM=="usb" GROUP="plugdev"', "cannot parse"),
        ('MODE="0666"', "matches every device"),
        ('ATTR=="x", MODE="0666"', "ATTR needs {attribute}"),
        ('KERNEL{x}=="apex_0", MODE="0666"', "KERNEL takes no {attribute}"),
    ],
)
def test_parser_rejects_broken_rules(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse(text)


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        # USB Accelerator before and after the firmware load.
        (usb("1a6e", "089a"), {"MODE": "0660", "GROUP": "plugdev"}),
        (usb("18d1", "9302"), {"MODE": "0660", "GROUP": "plugdev", "ATTR{power/control}": "on"}),
        # Its interfaces, other Google devices (phones) and other Global Unichip parts: untouched.
        (usb("18d1", "9302", devtype="usb_interface"), {}),
        (usb("18d1", "4ee7"), {}),
        (usb("1a6e", "0001"), {}),
        ({"SUBSYSTEM": "apex", "KERNEL": "apex_0"}, {"MODE": "0660", "GROUP": "apex"}),
        ({"SUBSYSTEM": "apex", "KERNEL": "apex_1"}, {"MODE": "0660", "GROUP": "apex"}),
        ({"SUBSYSTEM": "video4linux", "KERNEL": "video0"}, {}),
    ],
)
def test_rules_give_coral_devices_to_the_service_groups(device: dict, expected: dict) -> None:
    assert apply(parse(RULES.read_text()), device) == expected


def test_rule_groups_are_the_service_groups() -> None:
    groups = {
        value for rule in parse(RULES.read_text()) for key, _, _, value in rule if key == "GROUP"
    }
    unit_groups = re.search(r"^SupplementaryGroups=(.*)$", UNIT.read_text(), re.M)
    assert unit_groups
    assert groups <= set(unit_groups.group(1).split())


def _udevadm_verify() -> str | None:
    udevadm = shutil.which("udevadm")
    if udevadm is None:
        return None
    probe = subprocess.run([udevadm, "verify", "--help"], capture_output=True, timeout=30)
    return udevadm if probe.returncode == 0 else None


@pytest.mark.skipif(_udevadm_verify() is None, reason="udevadm verify needs systemd >= 254")
def test_udevadm_verify(tmp_path: Path) -> None:
    udevadm = _udevadm_verify()
    assert udevadm
    ok = subprocess.run([udevadm, "verify", "--resolve-names=never", str(RULES)],
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "98-broken.rules"
    broken.write_text('SUBSYSTEM="usb", MODE="0660"\n')
    bad = subprocess.run([udevadm, "verify", "--resolve-names=never", str(broken)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode != 0
