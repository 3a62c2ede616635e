"""``edge-agent model``: keygen, pack, verify and push signed model releases."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from edge_agent.cli import checked, config_type
from edge_agent.config.checks import Int, Seconds


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    """``HOST[:PORT]`` as ``(host, port)``.

    Raises:
        ValueError: a port that is not a number 0..65535.
    """
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    number = default_port if not port else int(port) if port.isdigit() else -1
    if not 0 <= number <= 65535:
        raise ValueError(f"expected HOST[:PORT] with a port 0..65535, got {text!r}")
    return (host or text), number


def _serve_address(text: str) -> None:
    _host_port(text, 8080)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _secret(env: str | None) -> bytes | None:
    if not env:
        return None
    if env not in os.environ:
        raise SystemExit(f"edge-agent model: environment variable {env} is not set")
    return os.environ[env].encode()


def _device_id(text: str) -> None:
    from edge_agent.updates.commands import check_topic_level

    check_topic_level(text, "device id")


def _group(text: str) -> None:
    from edge_agent.updates.commands import check_topic_level

    check_topic_level(text, "group")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``model`` and its actions."""
    p = sub.add_parser("model", help="sign, check and roll out model releases")
    actions = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    k = actions.add_parser("keygen", help="create an Ed25519 release-signing key pair")
    k.add_argument("--private", required=True, help="private key file to create (mode 0600)")
    k.add_argument("--public", required=True, help="public key file for devices' trusted_keys")
    k.add_argument("--passphrase-env", metavar="VAR", help="encrypt the key with $VAR")
    k.add_argument("--force", action="store_true", help="overwrite existing files")
    k.set_defaults(func=run_keygen)

    pk = actions.add_parser("pack", help="build a signed release directory")
    pk.add_argument("--out", required=True, help="release directory to create")
    pk.add_argument("--name", required=True, help="release name, e.g. doorcam-detector")
    pk.add_argument("--version", required=True, help="semver 1.2.3 or an integer")
    pk.add_argument("--model", required=True, help="model file (_edgetpu.tflite or CPU)")
    pk.add_argument("--cpu-model", help="CPU twin of an Edge TPU model")
    pk.add_argument("--labels", help="label file")
    pk.add_argument("--task", default="auto", choices=operator_tasks())
    pk.add_argument("--threshold", type=float)
    pk.add_argument("--iou", type=float)
    pk.add_argument("--top-k", type=int)
    pk.add_argument("--max-detections", type=int)
    pk.add_argument("--resize", choices=["auto", "stretch", "letterbox"])
    pk.add_argument("--input-mean", type=_floats, metavar="M[,M,M]")
    pk.add_argument("--input-std", type=_floats, metavar="S[,S,S]")
    pk.add_argument(
        "--golden",
        action="store_true",
        help="add a golden input/output pair computed with the CPU model (health check on install)",
    )
    pk.add_argument("--golden-input", help="golden input tensor (.npy)")
    pk.add_argument("--golden-output", help="golden output tensors (.npz/.npy)")
    pk.add_argument("--golden-tolerance", type=float, help="max raw difference (default 1)")
    pk.add_argument("--min-agent-version")
    pk.add_argument("--description", default="")
    pk.add_argument(
        "--compatible",
        action="append",
        metavar="TYPE",
        help="device type the release fits, matched against device.type (repeat; "
        "default: any type)",
    )
    pk.add_argument(
        "--target-device",
        action="append",
        metavar="ID",
        help="device id the release is meant for (repeat; with --target-group: either)",
    )
    pk.add_argument(
        "--target-group",
        action="append",
        metavar="GROUP",
        help="group the release is meant for (repeat; default: any device)",
    )
    pk.add_argument(
        "--replaces",
        action="append",
        metavar="NAME",
        help="model name this release may replace on a box running it (repeat)",
    )
    pk.add_argument("--key", required=True, help="private signing key")
    pk.add_argument("--passphrase-env", metavar="VAR")
    pk.add_argument("--force", action="store_true", help="replace an existing --out")
    pk.set_defaults(func=run_pack)

    v = actions.add_parser("verify", help="check a release's signature and files")
    v.add_argument("release", help="release directory or its manifest.json")
    v.add_argument("--key", action="append", required=True, help="trusted public key (repeat)")
    v.add_argument("--device-type", help="check the release fits a box of this device.type")
    v.add_argument("--device-id", help="...with this device id")
    v.add_argument("--group", action="append", help="...in this group (repeat)")
    v.add_argument("--running-model", help="...running a model of this name")
    v.set_defaults(func=run_verify)

    pu = actions.add_parser("push", help="roll a release out to devices over MQTT")
    pu.add_argument("release", help="release directory (pack output)")
    who = pu.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--device", action="append", type=checked(_device_id), help="device id (repeat)"
    )
    who.add_argument("--group", type=checked(_group), help="every device announcing this group")
    pu.add_argument(
        "--broker", default="localhost:1883", help="HOST[:PORT][,HOST[:PORT]...] in failover order"
    )
    pu.add_argument("--username")
    pu.add_argument("--password-env", metavar="VAR", help="broker password from $VAR")
    pu.add_argument("--tls", action="store_true", help="connect over TLS (implied by the files)")
    pu.add_argument("--ca-file", help="CA of the broker (default: system CAs)")
    pu.add_argument("--cert-file", help="client certificate (as the daemon's mqtt.cert_file)")
    pu.add_argument("--key-file", help="key of --cert-file (as the daemon's mqtt.key_file)")
    pu.add_argument("--prefix", default="edge-agent", help="devices' mqtt.prefix")
    pu.add_argument(
        "--base-url",
        help="where the release's files are published "
        "(default: serve them from here with the built-in lab server)",
    )
    pu.add_argument(
        "--serve", default="0.0.0.0:8080", type=checked(_serve_address), help="lab server HOST:PORT"
    )
    pu.add_argument("--advertise-host", help="host devices use to reach the lab server")
    pu.add_argument("--serve-cert", help="certificate: serve HTTPS")
    pu.add_argument("--serve-key", help="key of --serve-cert")
    pu.add_argument(
        "--canary",
        type=config_type(Int(lo=0), parse=int),
        default=0,
        help="update N devices first; halt on failure (0: no canary)",
    )
    pu.add_argument(
        "--timeout",
        type=config_type(Seconds(gt=0)),
        default=600.0,
        help="seconds per wave (default 600)",
    )
    pu.add_argument("--force", action="store_true", help="re-install/downgrade (device must allow)")
    pu.add_argument("--request-id")
    pu.add_argument("--key", action="append", help="verify with this public key first")
    pu.add_argument("--json", action="store_true", help="print states as JSON lines")
    pu.set_defaults(func=run_push)

    from edge_agent.cli import rollout

    rollout.add_parser(actions)


def operator_tasks() -> list[str]:
    from edge_agent.updates.manifest import TASKS

    return list(TASKS)


def run_keygen(args: argparse.Namespace) -> int:
    from edge_agent.tools.release import operator  # tools load only when asked for

    kid = operator.keygen(
        args.private, args.public, passphrase=_secret(args.passphrase_env), overwrite=args.force
    )
    print(f"key id {kid}: private {args.private}, public {args.public}")
    return 0


def run_pack(args: argparse.Namespace) -> int:
    from edge_agent.inference.model_info import inspect_model
    from edge_agent.tools.release import operator  # tools load only when asked for
    from edge_agent.updates.golden import make_golden

    adapter = {
        k: getattr(args, k)
        for k in (
            "threshold",
            "iou",
            "top_k",
            "max_detections",
            "resize",
            "input_mean",
            "input_std",
        )
        if getattr(args, k) is not None
    }
    if not args.cpu_model and inspect_model(args.model).edgetpu:
        print(
            f"edge-agent model pack: warning: {args.model} is compiled for the Edge TPU and "
            "no --cpu-model is given: devices without a working TPU will refuse this release",
            file=sys.stderr,
        )
    golden_input, golden_output = args.golden_input, args.golden_output
    with tempfile.TemporaryDirectory() as tmp:
        if args.golden:
            golden_input, golden_output = make_golden(args.cpu_model or args.model, tmp)
        out = operator.pack(
            args.out, name=args.name, version=args.version, model=args.model,
            cpu_model=args.cpu_model, labels=args.labels, golden_input=golden_input,
            golden_output=golden_output, golden_tolerance=args.golden_tolerance,
            task=args.task, adapter=adapter, min_agent_version=args.min_agent_version,
            description=args.description, private_key=args.key,
            passphrase=_secret(args.passphrase_env), overwrite=args.force,
            targets={
                "compatible": args.compatible or (), "devices": args.target_device or (),
                "groups": args.target_group or (), "replaces": args.replaces or (),
            },
        )  # fmt: skip
    print(f"packed {args.name}@{args.version} into {out} for {_targets(out)}")
    return 0


def _targets(release: str) -> str:
    """The targets a release's manifest names, for people."""
    from edge_agent.tools.release import operator
    from edge_agent.updates.targets import describe_targets

    return describe_targets(operator.read_manifest(release))


def run_verify(args: argparse.Namespace) -> int:
    from edge_agent.tools.release import operator  # tools load only when asked for
    from edge_agent.updates.targets import DeviceIdentity, describe_targets

    box = (args.device_type, args.device_id, args.group, args.running_model)
    device = None
    if any(v is not None for v in box):
        device = DeviceIdentity(
            args.device_type or "", args.device_id or "", tuple(args.group or ())
        )
    m = operator.verify(args.release, args.key, device=device, running=args.running_model)
    files = ", ".join(f"{f.name} ({f.role}, {f.size} B)" for f in m.files)
    print(f"OK {m.label} task={m.task}: {files}")
    print(f"targets: {describe_targets(m)}" + (" (fits the given box)" if device else ""))
    return 0


def _why(state: dict) -> str:
    """ " (reason: message)" without repeating a reason the message already starts with."""
    reason, message = state.get("reason"), state.get("message") or ""
    if not reason:
        return ""
    if message.startswith(f"{reason}: "):
        message = message[len(reason) + 2 :]
    return f" ({reason}: {message})" if message else f" ({reason})"


def run_push(args: argparse.Namespace) -> int:
    from edge_agent.publishing.settings import MqttSettings
    from edge_agent.tools.release.push import ServeSettings, push

    print(f"release targets: {_targets(args.release)}", file=sys.stderr)
    serve_host, serve_port = _host_port(args.serve, 8080)
    password = _secret(args.password_env)

    def report(device: str, state: dict) -> None:
        if args.json:
            print(json.dumps({"device": device, **state}), flush=True)
            return
        pct = f" {state['percent']}%" if state.get("percent") is not None else ""
        print(f"{device}: {state['state']}{pct}{_why(state)}", flush=True)

    code = push(
        args.release,
        broker=MqttSettings(
            hosts=tuple(args.broker.split(",")), username=args.username,
            password=password.decode() if password else None,
            tls=bool(args.tls or args.ca_file or args.cert_file or args.key_file),
            ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
            connect_timeout=10.0,
        ),
        prefix=args.prefix, devices=args.device or (), group=args.group,
        base_url=args.base_url,
        serve=ServeSettings(
            host=serve_host, port=serve_port, advertise_host=args.advertise_host,
            certfile=args.serve_cert, keyfile=args.serve_key,
        ),
        canary=args.canary, timeout=args.timeout, force=args.force,
        request_id=args.request_id, public_keys=args.key, report=report,
    )  # fmt: skip
    print("all devices active" if code == 0 else "rollout incomplete", file=sys.stderr)
    return code
