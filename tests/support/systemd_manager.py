"""A private systemd manager for testing units, also where PID 1 is not systemd.

`systemd --user` started as root applies every sandbox setting a system service
gets (User=, namespaces, seccomp, device cgroups). Two things make that safe and
faithful on a shared test machine:

- A manager moves every process of its root cgroup into ``init.scope``. Started
  naively, it would pull every process of the machine into its tree. So the child
  first moves itself into fresh leaf cgroups, then unshares the cgroup namespace
  (the leaves become its root) and remounts cgroupfs in its own mount namespace.
- It must believe it runs on a booted system: ``/run/systemd/system`` exists, ``/run``
  is a mount point, and ``/run/systemd/inaccessible/`` holds the nodes that
  InaccessiblePaths= (ProtectHome=) mounts over hidden paths. All of this exists
  only inside its mount namespace.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

SYSTEMD = "/lib/systemd/systemd"

BOOTED_SYSTEM = textwrap.dedent(
    """\
    set -e
    mountpoint -q /run || mount --bind /run /run
    mkdir -p /run/systemd
    mount -t tmpfs tmpfs /run/systemd
    mkdir /run/systemd/system /run/systemd/inaccessible
    cd /run/systemd/inaccessible
    mkdir -m 0 dir
    : > reg && chmod 0 reg
    mkfifo -m 0 fifo
    mknod -m 0 chr c 0 0
    mknod -m 0 blk b 0 0
    cd /
    """
)


def cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mounted cgroup hierarchy."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, rest = line.split(" - ", 1)
        fstype, _source, options = rest.split(" ", 2)
        if fstype in ("cgroup", "cgroup2"):
            mounts.append((fields.split()[4], fstype, options))
    return mounts


def own_cgroup(fstype: str, options: str) -> str:
    """This process's cgroup path in the hierarchy mounted with these options."""
    wanted = {o for o in options.split(",") if o not in ("rw", "ro", "none")}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (fstype == "cgroup2" and not controllers) or set(controllers.split(",")) == wanted:
            return path
    raise LookupError(f"no cgroup of this process for {fstype} {options}")


class UserManager:
    """A root `systemd --user` confined to its own cgroups and namespaces.

    Args:
        base: an empty root-owned directory outside /tmp (PrivateTmp= would hide
            it from units); it becomes the manager's $HOME and $XDG_RUNTIME_DIR.
    """

    def __init__(self, base: Path):
        self.base = base
        self.units = base / "home" / ".config" / "systemd" / "user"
        self.env = dict(os.environ, HOME=str(base / "home"), XDG_RUNTIME_DIR=str(base / "rt"))
        for key in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "DBUS_SESSION_BUS_ADDRESS"):
            self.env.pop(key, None)
        self._mounts = cgroup_mounts()
        self._leaves: list[Path] = []
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        """Start the manager; return once it accepts systemctl calls.

        Raises:
            OSError: cgroups or directories could not be set up.
            RuntimeError: the manager did not come up within ``timeout`` seconds.
        """
        for mount, fstype, options in self._mounts:
            leaf = Path(mount) / own_cgroup(fstype, options).lstrip("/") / self.base.name
            leaf.mkdir()
            self._leaves.append(leaf)
            if "cpuset" in options.split(","):  # an empty cpuset admits no process
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (leaf / knob).write_text((leaf.parent / knob).read_text())
        self.units.mkdir(parents=True)
        # Traversable: units run as other users reach their RuntimeDirectory below it.
        (self.base / "rt").mkdir(mode=0o711)
        script = BOOTED_SYSTEM
        if Path("/sys/fs/cgroup/cgroup.controllers").exists():
            script += "mount -t cgroup2 cgroup2 /sys/fs/cgroup\n"
        else:
            script += "mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup\n"
            for mount, fstype, options in self._mounts:
                script += f"mkdir -p {mount}\nmount -t {fstype} -o {options} {fstype} {mount}\n"
        # No journal here: units' output goes where their StandardOutput= says.
        script += f"exec {SYSTEMD} --user --log-target=null\n"
        procs = [leaf / "cgroup.procs" for leaf in self._leaves]

        def enter_leaves() -> None:
            for path in procs:
                path.write_text(str(os.getpid()))

        log = self.base / "manager.log"
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                ["unshare", "--mount", "--cgroup", "--propagation", "private", "sh", "-c", script],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=enter_leaves,
                start_new_session=True,
            )
        private = self.base / "rt" / "systemd" / "private"
        deadline = time.monotonic() + timeout
        while not private.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"systemd --user did not come up: {log.read_text()}")
            time.sleep(0.05)
        # Units run as other users (User=) must reach $NOTIFY_SOCKET, as under PID 1.
        (self.base / "rt" / "systemd").chmod(0o711)
        (self.base / "rt" / "systemd" / "notify").chmod(0o777)

    def systemctl(self, *args: str, timeout: float = 60) -> str:
        """Run `systemctl --user ARGS` against this manager; return its stdout.

        Raises:
            AssertionError: systemctl failed (the message carries its stderr).
        """
        out = self._run("systemctl", "--user", *args, timeout=timeout)
        assert out.returncode == 0, f"systemctl {' '.join(args)}: {out.stderr}"
        return out.stdout

    def status(self, unit: str) -> str:
        """`systemctl --user status UNIT` output, for failure messages."""
        return self._run("systemctl", "--user", "status", "--no-pager", unit, timeout=30).stdout

    def stop(self) -> None:
        """Stop the manager and remove its cgroups (it leaves init.scope and slices)."""
        if self._proc is not None and self._proc.poll() is None:
            self._run("systemctl", "--user", "exit", timeout=30)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        for leaf in self._leaves:
            nested = [p for p in leaf.rglob("*") if p.is_dir()]
            for cgroup in sorted(nested, key=lambda p: len(p.parts), reverse=True):
                cgroup.rmdir()
            leaf.rmdir()
        self._leaves.clear()

    def _run(self, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a command with the manager's environment."""
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
