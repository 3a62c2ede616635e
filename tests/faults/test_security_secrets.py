"""Security: no secret leaves the device in its logs, its messages or its command line.

The package's device daemon was given three secrets (tests/faults/conftest.py): its
real MQTT password in ``EDGE_AGENT_MQTT_PASSWORD``, a decoy ``mqtt.password`` in the
config file, and credentials inside ``updates.manifest_url`` (the daemon polls that URL
at startup and logs the failure). These tests read its whole stderr and every message
the monitor account received on ``#`` since before the daemon started (status, stats,
results, model state, availability, Home Assistant discovery) and look for each secret,
raw and in the Basic-auth form it is sent in. Also: ``check-config --print`` masks
them, and a config file holding secrets with mode 0644 draws the warning.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess

import pytest

from tests.faults.conftest import MANIFEST_PATH
from tests.support.daemon import agent_command, daemon_environment

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

PERMISSION_WARNING = re.compile(
    r"holds secrets \(mqtt\.password, updates\.manifest_url\) but its mode is 0644"
)


def forms(daemon_secrets) -> dict[str, str]:
    """Each secret as written, and the URL credentials as the Authorization header has them."""
    s = daemon_secrets
    pair = base64.b64encode(f"{s.url_user}:{s.url_password}".encode()).decode()
    return {
        "env mqtt password": s.env_password,
        "file mqtt password": s.file_password,
        "manifest URL password": s.url_password,
        "manifest URL Basic auth": pair,
    }


def pids_in_group(pgid: int) -> list[int]:
    """Processes of the daemon's process group (the daemon and its workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            if int(fields[2]) == pgid:
                out.append(int(entry))
    return out


def test_no_secret_in_the_daemon_log_messages_or_command_line(
    secure_daemon, monitor, daemon_secrets, release_server
):
    topics = secure_daemon.topics
    monitor.wait_count(topics.stats, 3, timeout=15)
    monitor.wait_for(topics.model)
    monitor.wait_for(topics.available, lambda m: m.payload == b"online")
    discovery = [m for m in monitor.messages if m.topic.startswith("homeassistant/")]
    assert len(discovery) >= 3, sorted({m.topic for m in monitor.messages})

    # The secrets were really used: the MQTT login worked (messages above), and the
    # manifest URL's credentials reached the release server as Basic auth...
    secret_forms = forms(daemon_secrets)
    polls = [h for path, h in release_server.requests if path == MANIFEST_PATH]
    # (a failed poll is retried after poll_interval: a slow run may see a second one)
    assert polls, "the manifest was never polled"
    assert {h.get("Authorization") for h in polls} == {
        "Basic " + secret_forms["manifest URL Basic auth"]
    }
    # ...and the URL went through the log, masked.
    log = secure_daemon.log()
    user = re.escape(daemon_secrets.url_user)
    assert re.search(
        rf"polling http://{user}:\*\*\*@127\.0\.0\.1:\d+/fleet/manifest\.json failed", log
    )
    assert PERMISSION_WARNING.search(log), log[:2000]

    command_lines = []
    for pid in pids_in_group(secure_daemon.pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command_lines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
    assert command_lines

    messages = list(monitor.messages)
    leaks = []
    for what, secret in secret_forms.items():
        if secret in log:
            leaks.append(f"{what} in the daemon log")
        leaks += [f"{what} in {m.topic}" for m in messages if secret.encode() in m.payload]
        leaks += [f"{what} in topic {m.topic}" for m in messages if secret in m.topic]
        leaks += [f"{what} in argv {c[:80]}" for c in command_lines if secret in c]
    assert leaks == []
    own = [m.topic for m in messages if m.topic.startswith(topics.base) and "/cmd/" not in m.topic]
    kinds = sorted({t.rsplit("/", 1)[-1] for t in own} | {"discovery"})
    print(
        f"FIGURE secrets: messages_scanned={len(messages)} "
        f"payload_bytes={sum(len(m.payload) for m in messages)} log_bytes={len(log)} "
        f"processes={len(command_lines)} topics={','.join(kinds)} leaks=0"
    )


def check_config(path, env) -> subprocess.CompletedProcess:
    """``edge-agent check-config --print PATH``."""
    return subprocess.run(
        agent_command("check-config", "--print", str(path)),
        env=daemon_environment(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_config_print_masks_secrets_and_warns_about_file_mode(
    tmp_path, secure_daemon, daemon_secrets
):
    s = daemon_secrets
    readable = tmp_path / "config-0644.toml"
    private = tmp_path / "config-0600.toml"
    shutil.copyfile(secure_daemon.config_path, readable)
    shutil.copyfile(secure_daemon.config_path, private)
    readable.chmod(0o644)
    private.chmod(0o600)
    env = {"EDGE_AGENT_MQTT_PASSWORD": s.env_password}

    shown = check_config(readable, env)
    assert shown.returncode == 0, shown.stderr
    printed = json.loads(shown.stdout)
    assert printed["mqtt"]["password"] == "***"
    assert printed["mqtt"]["username"] == "e2e-dev"
    assert re.fullmatch(
        rf"http://{s.url_user}:\*\*\*@127\.0\.0\.1:\d+{MANIFEST_PATH}",
        printed["updates"]["manifest_url"],
    ), printed["updates"]["manifest_url"]
    assert PERMISSION_WARNING.search(shown.stderr), shown.stderr
    for what, secret in forms(s).items():
        assert secret not in shown.stdout + shown.stderr, what

    quiet = check_config(private, env)
    assert quiet.returncode == 0, quiet.stderr
    assert "its mode is" not in quiet.stderr, quiet.stderr
    assert json.loads(quiet.stdout)["mqtt"]["password"] == "***"
