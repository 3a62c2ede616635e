"""SIGKILL during an update at every step: after restart the old or the new model is
active, complete and valid.

An install of cls@2.0.0 over an active cls@1.0.0 (with cls@0.9.0 due for pruning)
runs in a forked child process that downloads from a real loopback HTTP server. The
child is killed (1) at each of the store's checkpoints in turn, via the fault hook,
and (2) after random delays, mostly in the middle of a download. The parent then
runs startup recovery and checks the result.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.updates.commands import build_update_command
from edge_agent.updates.installer import UpdateInstaller, UpdateSettings
from edge_agent.updates.signing import TrustedKeys
from edge_agent.updates.store import ModelStore
from edge_agent.updates.transport import DownloadSettings
from tests.support.updates_http import FileServer, Route
from tests.support.updates_release import fake_tflite, install_local, make_release, snapshot

KEY = Ed25519PrivateKey.generate()
SETTINGS = UpdateSettings(
    download=DownloadSettings(allow_http=True, read_timeout=5, retries=0, progress_interval=0)
)
RANDOM_KILLS = 40

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def installer(state, hook=None):
    store = ModelStore(state, keep_versions=1, hook=hook)
    return UpdateInstaller(store, TrustedKeys([KEY.public_key()]), SETTINGS)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A base state (1.0.0 active, 0.9.0 older) and a server publishing 2.0.0."""
    tmp = tmp_path_factory.mktemp("crash")
    base = tmp / "base"
    releases = tmp / "rel"
    inst = installer(base)
    inst.store.keep_versions = 5
    for version in ("0.9.0", "1.0.0"):
        install_local(inst, make_release(releases, KEY, version).dir)
    files = {
        "model.tflite": ("model", fake_tflite(400_000, seed=2)),
        "labels.txt": ("labels", b"background\ncat\ndog\n"),
    }
    new = make_release(releases, KEY, "2.0.0", files=files)
    with FileServer() as server:
        for name, data in new.files.items():
            # Throttled so that random kills land inside the download most of the time.
            server.add(f"/cls/2.0.0/{name}", Route(body=data, throttle=0.002))
        command = build_update_command(envelope=new.envelope, base_url=server.url("/cls/2.0.0/"))
        yield tmp, base, command


def run_child(state, command, kill_at=None):
    """Fork an install; with kill_at=N the child SIGKILLs itself at checkpoint N."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            calls = []

            def hook(point):
                calls.append(point)
                if kill_at is not None and len(calls) - 1 == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            installer(state, hook).install(command)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    return pid


def check_recovered(state):
    """Recover like the daemon at startup; returns the active version."""
    store = ModelStore(state, keep_versions=1)
    release = store.recover()
    assert release is not None
    active = store.active(verify=True)
    assert active == release
    assert release.version in ("1.0.0", "2.0.0")
    assert release.file("model").stat().st_size == release.manifest.file("model").size
    leftovers = [p for p in store.root.rglob("*") if p.name.endswith((".part", ".tmp"))]
    assert leftovers == [] and not (store.root / ".staging").exists()
    assert not any(p.name.startswith("active.tmp") for p in store.root.iterdir())
    for other in store.installed():  # whatever else survived is complete too
        store.load(other.path, full=True)
    return release.version


def checkpoints(world):
    """The checkpoint names of an uninterrupted install, in order."""
    tmp, base, command = world
    state = tmp / "dry"
    shutil.copytree(base, state)
    points = []
    installer(state, points.append).install(command)
    shutil.rmtree(state)
    return points


def test_checkpoints_cover_every_step(world):
    points = checkpoints(world)
    for expected in (
        "staging_created",
        "downloaded:model.tflite",
        "downloaded:labels.txt",
        "verified",
        "staging_synced",
        "renamed",
        "release_synced",
        "pointer_written",
        "pointer_synced",
        "pointer_renamed",
        "pruned",
    ):
        assert expected in points


def test_sigkill_at_every_checkpoint(world):
    tmp, base, command = world
    points = checkpoints(world)
    switched = points.index("pointer_renamed")
    for k, point in enumerate(points):
        state = tmp / f"kill-{k}"
        shutil.copytree(base, state)
        pid = run_child(state, command, kill_at=k)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, point
        version = check_recovered(state)
        assert version == ("2.0.0" if k >= switched else "1.0.0"), point
        # After the restart, the update can simply be retried (or is already done).
        if version == "1.0.0":
            assert installer(state).install(command).version == "2.0.0"
        assert ModelStore(state).active(verify=True).version == "2.0.0"
        shutil.rmtree(state)


def test_sigkill_at_random_times(world):
    tmp, base, command = world
    rng = random.Random(1234)
    outcomes = {"1.0.0": 0, "2.0.0": 0}
    start = time.monotonic()
    for i in range(RANDOM_KILLS):
        state = tmp / f"random-{i}"
        shutil.copytree(base, state)
        before = snapshot(state / "models")
        pid = run_child(state, command)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        version = check_recovered(state)
        outcomes[version] += 1
        if version == "1.0.0":
            # Old model kept: its release and pointer are exactly as before.
            after = snapshot(state / "models")
            assert {k: v for k, v in after.items() if k.startswith("cls/1.0.0")} == {
                k: v for k, v in before.items() if k.startswith("cls/1.0.0")
            }
        shutil.rmtree(state)
    assert outcomes["1.0.0"] > 0  # most kills land mid-download
    assert time.monotonic() - start < 30
