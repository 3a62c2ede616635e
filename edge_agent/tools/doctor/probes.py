"""Bounded probes of the outside world: an MQTT broker, a model load, a camera frame.

``edge-agent doctor`` reports what they find and ``edge-agent demo`` uses the broker
probe to pick a broker. Each one has a time limit and reports problems as values
instead of raising, because a box with a broken camera, broker or delegate is exactly
what they are run on. The model is loaded in a child process, as the daemon does: a
delegate that hangs or aborts must not take the caller down with it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import ssl
import tempfile
import threading
import time
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from edge_agent.inference.model import ModelOptions
from edge_agent.publishing.settings import MqttSettings, base_client, ssl_context

_CHILD_STDERR_CHARS = 2000


# ---------------------------------------------------------------------------- broker


class BrokerProbe(NamedTuple):
    """Outcome of :func:`probe_broker`; ``stage`` says how far it got."""

    ok: bool
    stage: str  # "connack" when ok; else where it failed: tcp, tls, connack, timeout
    detail: str
    ms: float


def probe_broker(settings: MqttSettings, timeout: float = 5.0, client_id: str = "") -> BrokerProbe:
    """Connect to a broker the way the daemon would and wait for its CONNACK.

    A TCP connect comes first, so "connection refused" is told apart from a TLS or an
    authentication problem. The probe uses its own client id: reusing the daemon's would
    disconnect a running daemon.

    Args:
        settings: host, port, transport, credentials and TLS files.
        timeout: seconds for each of TCP connect, TLS handshake and CONNACK.
        client_id: MQTT client id (default ``edge-agent-probe-{pid}``).

    Returns:
        The outcome; never raises for network problems.

    Raises:
        ConfigError: the TLS files are missing or unusable.
    """
    start = time.monotonic()
    where = f"{settings.host}:{settings.port}"

    def outcome(ok: bool, stage: str, detail: str) -> BrokerProbe:
        return BrokerProbe(ok, stage, detail, round((time.monotonic() - start) * 1000.0, 1))

    context = ssl_context(settings)
    try:
        socket.create_connection((settings.host, settings.port), timeout=timeout).close()
    except OSError as exc:
        return outcome(False, "tcp", f"{where}: {exc.strerror or exc}")
    # No last will: a probe must never announce the real device offline.
    client = base_client(settings, client_id or f"edge-agent-probe-{os.getpid()}", context)
    client.connect_timeout = timeout
    answer: list[Any] = []
    client.on_connect = lambda c, u, flags, code, props: answer.append(code)
    try:
        client.connect(settings.host, settings.port, keepalive=max(10, int(timeout) * 2))
    except ssl.SSLError as exc:
        return outcome(False, "tls", f"{where}: TLS handshake failed: {exc}")
    except (OSError, ValueError) as exc:
        return outcome(False, "tcp", f"{where}: {exc}")
    try:
        deadline = time.monotonic() + timeout
        while not answer and time.monotonic() < deadline:
            rc = client.loop(timeout=0.1)
            if rc != mqtt.MQTT_ERR_SUCCESS and not answer:
                return outcome(
                    False, "connack", f"{where}: closed before CONNACK ({mqtt.error_string(rc)})"
                )
        if not answer:
            return outcome(False, "timeout", f"{where}: no CONNACK within {timeout:g}s")
        if answer[0].is_failure:
            return outcome(False, "connack", f"{where}: connection refused: {answer[0]}")
        return outcome(True, "connack", f"{where}: connected")
    finally:
        client.disconnect()
        client.loop(timeout=0.05)


# ----------------------------------------------------------------------------- model


def _load_and_run(options: ModelOptions) -> dict[str, Any]:
    """Load the model as the daemon would and run one blank frame."""
    import numpy as np

    from edge_agent.errors import EdgeAgentError
    from edge_agent.inference.model import LoadedModel

    try:
        t0 = time.perf_counter()
        model = LoadedModel.load(options)
        load_ms = (time.perf_counter() - t0) * 1000.0
        out = model.infer(np.zeros((480, 640, 3), np.uint8))
    except EdgeAgentError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # a runtime's own exception: reported, whatever it is
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    session = model.engine.session
    assert session is not None  # load() returns only with a session
    return {
        "ok": True,
        "backend": out.backend,
        "runtime": session.runtime,
        "file": out.model_path,
        "task": model.task,
        "input": [list(session.input.shape), str(session.input.dtype)],
        "attempts": [list(a) for a in model.engine.attempts],
        "load_ms": round(load_ms, 1),
        "invoke_ms": round(out.inference_ms, 2),
        "labels": len(model.codec.decoder.labels),
        "warnings": list(model.codec.warnings),
        "family": model.codec.decoder.family,
        "normalization": model.codec.normalization.to_json() if model.codec.normalization else None,
        "labels_source": model.codec.labels_source,
    }


def _model_child(options: ModelOptions, conn: Any) -> None:
    """Child process body: run :func:`_load_and_run` and send its facts back."""
    # TFLite and libedgetpu write diagnostics straight to fd 2: keep them for the report.
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        result = _load_and_run(options)
        capture.seek(0)
        result["stderr"] = capture.read().decode("utf-8", "replace")[-_CHILD_STDERR_CHARS:]
    conn.send(result)
    conn.close()


def probe_model(options: ModelOptions, timeout: float = 60.0) -> dict[str, Any]:
    """Load a model in a child process and run one blank frame through it.

    Args:
        options: what the daemon would load.
        timeout: seconds before a hung load (a stuck delegate) is killed.

    Returns:
        ``{"ok": True, "backend", "runtime", "file", "task", "input", "attempts",
        "load_ms", "invoke_ms", "labels", "warnings", "stderr"}`` or
        ``{"ok": False, "error", "stderr"?}``.
    """
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_model_child, args=(options, send), name="doctor-model", daemon=True)
    child.start()
    send.close()
    result: dict[str, Any] | None = None
    hung = False
    try:
        if receive.poll(timeout):
            result = receive.recv()
        else:
            hung = True
            child.kill()
    except EOFError:
        pass  # the child died before answering
    child.join(5.0)
    if child.is_alive():
        child.kill()
        child.join(5.0)
    receive.close()
    if result is not None:
        return result
    if hung:
        return {"ok": False, "error": f"loading did not finish within {timeout:g}s (hung)"}
    code = child.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return {"ok": False, "error": f"loading crashed the process ({name})"}
    if code is None:
        return {"ok": False, "error": "the loader did not exit, even after SIGKILL"}
    return {"ok": False, "error": f"the loader exited with code {code} without an answer"}


def grab_frame(cam: Any, timeout: float, fit: Any = None) -> tuple[list[int] | None, str, float]:
    """Open a camera and read one frame in a helper thread bounded by ``timeout``; a
    device is opened in the mode fitted to ``fit`` (a ModelFit), as the daemon would.

    OpenCV calls cannot be interrupted: a stuck one leaves a daemon thread behind, which
    the process waits for at exit (capture/leftover.py: one that returns from OpenCV while
    Python finalizes aborts the process).
    """
    from edge_agent.capture.leftover import left_blocked
    from edge_agent.capture.sources import open_capture, parse_source

    box: dict[str, Any] = {}

    def grab() -> None:
        try:
            cap = open_capture(
                parse_source(cam.source),
                name=cam.name,
                **{k: getattr(cam, k) or None for k in ("width", "height", "fps")},
                open_timeout=timeout,
                read_timeout=timeout,
                fit=fit,
            )
            try:
                ok, image = cap.read()
            finally:
                cap.release()
            if ok and image is not None:
                box["shape"] = list(image.shape)
            else:
                box["error"] = "opened, but no frame came"
        except Exception as exc:  # CaptureError, cv2.error: reported
            box["error"] = str(exc)

    start = time.monotonic()
    thread = threading.Thread(target=grab, name=f"doctor-camera-{cam.name}", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    seconds = time.monotonic() - start
    if thread.is_alive():
        left_blocked(cam.name, thread, start, 2 * timeout)  # its open, then its read
        return None, f"no frame within {timeout:g}s", seconds
    return box.get("shape"), box.get("error", ""), seconds
