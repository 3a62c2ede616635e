"""mosquitto locked down as a fleet would run it: TLS only, passwords, per-account ACL.

:class:`SecureBroker` writes a mosquitto config with two TLS listeners on loopback
(``port`` presents the server certificate for 127.0.0.1/localhost, ``wrong_host_port``
one from the same CA valid only for another name), ``allow_anonymous false``, a hashed
password file and this ACL (``P`` is the topic prefix)::

    device D (groups G...)   write P/D/#  and its discovery configs  homeassistant/+/D/#
                             read  P/D/cmd/#  and  P/group/G/cmd/#  for each G
    operator                 write P/+/cmd/#  and  P/group/+/cmd/#;  read P/#
    monitor                  read  #   (the tests' observer, e.g. Home Assistant)

:meth:`SecureBroker.session` is a publish-only client logged in as one account (MQTT 5 by
default, so a refused publish comes back as a PUBACK reason code instead of silence), and
:meth:`SecureBroker.subscriber` a subscriber with a login; both are
:class:`~tests.support.broker.MqttSubscriber`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from tests.support.broker import (  # noqa: F401 (Refused: re-exported for the tests)
    HOST,
    MOSQUITTO,
    MqttSubscriber,
    Refused,
    free_port,
    wait_for_port,
)
from tests.support.tls import Pki

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


@dataclass(frozen=True)
class Account:
    """A broker login."""

    username: str
    password: str


def _random_password(tag: str) -> str:
    """A password unlikely to appear anywhere by accident (the secrets test greps for it)."""
    return f"{tag}-{secrets.token_urlsafe(18)}"


def _sha512_entry(account: Account) -> str:
    """A ``$6$`` password line (salted SHA-512), read by mosquitto 1.x and 2.x alike."""
    salt = os.urandom(12)
    digest = hashlib.sha512(account.password.encode() + salt).digest()
    salt_b64, digest_b64 = (base64.b64encode(b).decode() for b in (salt, digest))
    return f"{account.username}:$6${salt_b64}${digest_b64}"


def write_password_file(path: Path, accounts: list[Account]) -> Path:
    """Write a hashed mosquitto password file (mosquitto_passwd -U when installed).

    Returns:
        ``path``, mode 0600.
    """
    if MOSQUITTO_PASSWD:
        path.write_text("".join(f"{a.username}:{a.password}\n" for a in accounts))
        path.chmod(0o600)
        subprocess.run(
            [MOSQUITTO_PASSWD, "-U", str(path)], check=True, capture_output=True, timeout=30
        )
    else:
        path.write_text("".join(_sha512_entry(a) + "\n" for a in accounts))
        path.chmod(0o600)
    assert all(a.password not in path.read_text() for a in accounts), "passwords not hashed"
    return path


def acl_lines(prefix: str, devices: dict[str, tuple[str, ...]], discovery_prefix: str) -> list[str]:
    """The ACL described in the module docstring."""
    lines = ["user monitor", "topic read #", ""]
    lines += ["user operator", f"topic write {prefix}/+/cmd/#"]
    lines += [f"topic write {prefix}/group/+/cmd/#", f"topic read {prefix}/#", ""]
    for device, groups in devices.items():
        node = device.replace(".", "_")  # Home Assistant's node id of the device
        lines += [f"user {device}", f"topic write {prefix}/{device}/#"]
        lines.append(f"topic write {discovery_prefix}/+/{node}/#")
        lines.append(f"topic read {prefix}/{device}/cmd/#")
        lines += [f"topic read {prefix}/group/{g}/cmd/#" for g in groups]
        lines.append("")
    return lines


class SecureBroker:
    """A mosquitto process with TLS listeners, a password file and an ACL.

    Args:
        workdir: where the config, password file, ACL and logs go.
        pki: the certificates (see :func:`tests.support.tls.make_pki`).
        prefix: the topic prefix the ACL is written for.
        devices: device id -> its groups; each device gets an account named after it.
        discovery_prefix: Home Assistant discovery prefix a device may publish under.
    """

    def __init__(
        self,
        workdir: Path,
        pki: Pki,
        *,
        prefix: str,
        devices: dict[str, tuple[str, ...]],
        discovery_prefix: str = "homeassistant",
    ):
        assert MOSQUITTO, "mosquitto is not installed"
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.pki, self.prefix = workdir, pki, prefix
        self.host = HOST
        self.port, self.wrong_host_port = free_port(), free_port()
        self.accounts = {
            name: Account(name, _random_password(name))
            for name in ("monitor", "operator", *devices)
        }
        self.log = workdir / "mosquitto.log"
        passwords = write_password_file(workdir / "passwd", list(self.accounts.values()))
        acl = workdir / "acl"
        acl.write_text("\n".join(acl_lines(prefix, devices, discovery_prefix)))
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwords}",
            f"acl_file {acl}",
            "persistence false",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # root would otherwise drop privileges
            f"log_dest file {self.log}",
            "log_type all",  # "Denied PUBLISH" is logged at debug level
            "connection_messages true",
            "set_tcp_nodelay true",  # no Nagle delay on each command/state round trip
        ]
        for port, cert in ((self.port, pki.server), (self.wrong_host_port, pki.wrong_host)):
            lines += [f"listener {port} {HOST}", f"cafile {pki.ca}"]
            lines += [f"certfile {cert.cert}", f"keyfile {cert.key}"]
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen | None = None

    def account(self, name: str) -> Account:
        """The login of ``monitor``, ``operator`` or a device id."""
        return self.accounts[name]

    def start(self, timeout: float = 10.0) -> SecureBroker:
        """Start mosquitto and wait until both listeners accept TCP connections."""
        assert self._proc is None, "already running"
        with open(self.workdir / "stderr.log", "ab") as err:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        proc = self._proc
        try:
            for port in (self.port, self.wrong_host_port):
                wait_for_port(self.host, port, timeout, lambda: proc.poll() is None)
        except Exception:
            self.stop()
            raise RuntimeError(f"mosquitto did not start:\n{self.logs()}") from None
        return self

    def stop(self) -> None:
        """Terminate mosquitto (SIGKILL if it does not go within 5 s)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def logs(self) -> str:
        """mosquitto's log and stderr."""
        parts = [p.read_text(errors="replace") for p in (self.log, self.workdir / "stderr.log")]
        return "".join(p for p in parts if p)

    def session(
        self, account: str | Account | None, *, protocol=mqtt.MQTTv5, timeout: float = 10.0
    ) -> MqttSubscriber:
        """A started publish-only client logged in as ``account`` (a name, an
        :class:`Account` such as a forged one, or None: anonymous).

        Raises:
            Refused: the broker refused the login.
        """
        if isinstance(account, str):
            account = self.accounts[account]
        name = f"test-{account.username if account else 'anon'}"
        return self._client((), account, protocol=protocol, name=name).start(timeout)

    def subscriber(self, name: str, topics=("#",)) -> MqttSubscriber:
        """A started subscriber logged in as account ``name``."""
        return self._client(topics, self.accounts[name], name="test-sub").start()

    def _client(self, topics, account: Account | None, **kw) -> MqttSubscriber:
        """A client verifying the broker with the CA, logged in as ``account``."""
        return MqttSubscriber(
            self.host, self.port, topics, tls={"ca_certs": self.pki.ca},
            username=account.username if account else None,
            password=account.password if account else None, **kw,
        )  # fmt: skip
