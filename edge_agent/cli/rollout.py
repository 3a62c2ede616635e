"""``edge-agent model rollout``: staged rollouts in waves (start, resume, status, abort, list)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edge_agent.cli import checked, config_type
from edge_agent.cli.model import _group, _host_port, _serve_address
from edge_agent.config.checks import Seconds
from edge_agent.errors import ModelUpdateError


def add_parser(actions: argparse._SubParsersAction) -> None:
    """Register ``model rollout`` and its actions."""
    p = actions.add_parser("rollout", help="staged rollouts in waves, durable and resumable")
    sub = p.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="rollout files (default $EDGE_AGENT_OPERATOR_DIR "
                        "or ~/.local/state/edge-agent/rollouts)")  # fmt: skip
    common.add_argument("--json", action="store_true", help="print the summary as JSON")
    net = argparse.ArgumentParser(add_help=False)
    net.add_argument("--broker", default="localhost:1883", type=checked(_broker_address),
                     help="HOST[:PORT]")  # fmt: skip
    net.add_argument("--username")
    net.add_argument("--password-env", metavar="VAR", help="broker password from $VAR")
    net.add_argument("--tls", action="store_true")
    net.add_argument("--ca-file")
    net.add_argument("--cert-file")
    net.add_argument("--key-file")
    serve = argparse.ArgumentParser(add_help=False)
    serve.add_argument("--serve", default="0.0.0.0:8080", type=checked(_serve_address),
                       help="lab server HOST:PORT "
                       "(without --base-url; give the same one to resume)")  # fmt: skip
    serve.add_argument("--advertise-host")

    s = sub.add_parser("start", parents=[common, net, serve], help="plan and run a rollout")
    s.add_argument("release", help="release directory (pack output)")
    s.add_argument("--group", required=True, type=checked(_group),
                   help="every device announcing this group")  # fmt: skip
    s.add_argument("--waves", default="1,5%,25%,100%", type=checked(_waves),
                   help="cumulative counts or percentages of the membership "
                   "(default 1,5%%,25%%,100%%)")  # fmt: skip
    s.add_argument("--threshold", default="0", type=checked(_amount),
                   help="halt above N or N%% failed in a wave")  # fmt: skip
    s.add_argument("--soak", type=_some_seconds, default=0.0, help="seconds between waves")
    s.add_argument("--device-timeout", type=_seconds, default=600.0)
    s.add_argument("--offline", choices=["skip", "wait", "fail"], default="skip")
    s.add_argument("--offline-wait", type=_some_seconds, default=0.0,
                   help="seconds, with --offline wait")  # fmt: skip
    s.add_argument("--prefix", default="edge-agent")
    s.add_argument("--base-url", help="where the release's files are published")
    s.add_argument("--discover", type=_some_seconds, default=2.0,
                   help="seconds to collect statuses")  # fmt: skip
    s.add_argument("--force", action="store_true")
    s.add_argument("--id", type=checked(_rollout_id), help="rollout id (default: time + random)")
    s.set_defaults(func=run_start)
    r = sub.add_parser("resume", parents=[common, net, serve], help="continue a rollout")
    r.add_argument("id", type=checked(_rollout_id))
    r.add_argument("--base-url", help="the release is published there (as at start)")
    r.set_defaults(func=run_resume)
    st = sub.add_parser("status", parents=[common], help="show a rollout's report")
    st.add_argument("id", type=checked(_rollout_id))
    st.set_defaults(func=run_status)
    a = sub.add_parser("abort", parents=[common, net], help="stop a rollout's further waves")
    a.add_argument("id", type=checked(_rollout_id))
    a.add_argument("--abort-rollback", action="store_true", help="roll back updated devices")
    a.set_defaults(func=run_abort)
    ls = sub.add_parser("list", parents=[common], help="list stored rollouts")
    ls.set_defaults(func=run_list)


# The library's own checks, run as argparse types so that a bad value is a usage error
# naming the option (exit 2), not a ValueError traceback (or, for --discover nan, a
# discovery that never ends).
_seconds = config_type(Seconds(gt=0))
_some_seconds = config_type(Seconds(lo=0))


def _broker_address(text: str) -> None:
    _host_port(text, 1883)


def _waves(text: str) -> None:
    from edge_agent.tools.release.rollout.plan import Plan

    Plan.parse(text, "0")


def _amount(text: str) -> None:
    from edge_agent.tools.release.rollout.plan import Amount

    Amount.parse(text)


def _rollout_id(text: str) -> None:
    from edge_agent.tools.release.rollout.store import check_rollout_id

    check_rollout_id(text)


def _store(args: argparse.Namespace) -> Any:
    from edge_agent.tools.release.rollout.store import RolloutStore

    return RolloutStore(args.state_dir)


def _broker(args: argparse.Namespace) -> Any:
    from edge_agent.cli.model import _secret
    from edge_agent.publishing.settings import MqttSettings

    host, port = _host_port(args.broker, 1883)
    password = _secret(args.password_env)
    return MqttSettings(
        host=host, port=port, username=args.username,
        password=password.decode() if password else None,
        tls=bool(args.tls or args.ca_file or args.cert_file or args.key_file),
        ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
        connect_timeout=10.0,
    )  # fmt: skip


@contextmanager
def _served(args: argparse.Namespace, release: str, base_url: str | None) -> Iterator[str]:
    """The release's base URL: the given one, or a lab server run for the duration."""
    if base_url:
        yield base_url
        return
    from edge_agent.tools.release.lab_server import LabServer
    from edge_agent.tools.release.operator import read_manifest
    from edge_agent.updates.manifest import MANIFEST_FILE

    manifest = read_manifest(os.path.join(release, MANIFEST_FILE))
    host, port = _host_port(args.serve, 8080)
    broker_host = _host_port(args.broker, 1883)[0]
    server = LabServer(release, [m.name for m in manifest.files], host=host, port=port,
                       advertise_host=args.advertise_host, peer=broker_host,
                       timeout=7 * 24 * 3600).start()  # fmt: skip
    try:
        yield server.url
    finally:
        server.stop()


def _drive(args: argparse.Namespace, store: Any, rollout_id: str) -> int:
    """Run the rollout with a live progress line (TTY only); Ctrl-C leaves it resumable."""
    from edge_agent.tools.release.rollout.report import progress_line, summary, table
    from edge_agent.tools.release.rollout.runner import Runner
    from edge_agent.tools.release.rollout.store import RolloutStatus

    runner = Runner(store, rollout_id, _broker(args))
    tty = sys.stdout.isatty() and sys.stderr.isatty() and not args.json

    def progress(ro: Any) -> None:
        if tty:
            print("\r" + progress_line(ro)[:200], end="", file=sys.stderr, flush=True)

    def interrupted(_sig: int, _frame: Any) -> None:
        runner.stop.set()

    old = signal.signal(signal.SIGINT, interrupted)
    try:
        ro = runner.run(progress=progress)
    finally:
        signal.signal(signal.SIGINT, old)
    if tty:
        print(file=sys.stderr)
    print(json.dumps(summary(ro), indent=1) if args.json else table(ro))
    if ro.status is RolloutStatus.RUNNING:
        print(f"interrupted: edge-agent model rollout resume {ro.id}", file=sys.stderr)
        return 130
    return 0 if ro.status is RolloutStatus.COMPLETED else 1


def run_start(args: argparse.Namespace) -> int:
    from edge_agent.tools.release.rollout.plan import Plan
    from edge_agent.tools.release.rollout.runner import start

    plan = Plan.parse(args.waves, args.threshold, soak=args.soak,
                      device_timeout=args.device_timeout, offline=args.offline,
                      offline_wait=args.offline_wait)  # fmt: skip
    store = _store(args)
    with _served(args, args.release, args.base_url) as url:
        ro = start(args.release, group=args.group, plan=plan, broker=_broker(args),
                   prefix=args.prefix, base_url=url, store=store,
                   discover_seconds=args.discover, force=args.force,
                   rollout_id=args.id)  # fmt: skip
        print(f"rollout {ro.id}: {len(ro.devices)} devices in {len(ro.waves)} waves "
              f"{[len(w) for w in ro.waves]}; left out: {ro.left_out or 'none'}",
              file=sys.stderr)  # fmt: skip
        return _drive(args, store, ro.id)


def run_resume(args: argparse.Namespace) -> int:
    store = _store(args)
    ro = store.load(args.id)
    stored_url = json.loads(ro.payload).get("base_url")  # written by start: trusted
    with _served(args, ro.release, args.base_url) as url:
        if url != stored_url:
            raise SystemExit(
                f"edge-agent model rollout: the release would be served at {url}, the "
                f"devices were told {stored_url}: give the same --base-url or --serve/"
                "--advertise-host as at start"
            )
        return _drive(args, store, ro.id)


def run_status(args: argparse.Namespace) -> int:
    from edge_agent.tools.release.rollout.report import summary, table

    ro = _store(args).load(args.id)
    print(json.dumps(summary(ro), indent=1) if args.json else table(ro))
    return 0


def run_abort(args: argparse.Namespace) -> int:
    from edge_agent.tools.release.rollout.report import summary, table
    from edge_agent.tools.release.rollout.runner import abort

    broker = _broker(args) if args.abort_rollback else None
    ro = abort(_store(args), args.id, broker, rollback=args.abort_rollback)
    print(json.dumps(summary(ro), indent=1) if args.json else table(ro))
    return 0


def run_list(args: argparse.Namespace) -> int:
    """One line (or JSON object) per stored rollout; a damaged file is named on stderr with
    its reason and the others are still listed (exit 1 then)."""
    store = _store(args)
    rows, damaged = [], 0
    for rid in store.ids():
        try:
            ro = store.load(rid)
        except ModelUpdateError as exc:
            damaged += 1
            print(f"edge-agent model rollout list: {exc}", file=sys.stderr)
            rows.append({"id": rid, "error": str(exc)})
            continue
        rows.append({"id": rid, "status": ro.status.value, "label": ro.label,
                     "group": ro.group, "devices": len(ro.devices)})  # fmt: skip
        if not args.json:
            print(f"{rid}  {ro.status.value:<10} {ro.label}  group {ro.group}  "
                  f"{len(ro.devices)} devices")  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
    return 1 if damaged else 0
