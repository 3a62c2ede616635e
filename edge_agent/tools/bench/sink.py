"""The far end of the benchmark: a broker (unless one is given) and a results subscriber.

Both run in a child process of their own, so that neither the broker's nor the
subscriber's Python work holds the benchmark's GIL or counts in its memory; they still
share the machine's cores, as a broker on the same box would. The subscriber records,
for every result, when it arrived, so the benchmark can prove every frame was delivered
and measure capture -> delivery latency (the payload's ``timestamp`` is the capture's
wall clock, and both processes read the same clock).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from edge_agent.errors import PublishError
from edge_agent.inference.worker import forkserver_context
from edge_agent.publishing.settings import MqttSettings, base_client

logger = logging.getLogger(__name__)

PREFIX = "edge-agent-bench"
EMBEDDED = "embedded amqtt"


def results_device(topic: str) -> str:
    """The device id of a ``{PREFIX}/{device}/results`` topic."""
    return topic.split("/")[-2]


class _Subscriber:
    """Counts results per device and keeps their arrival times (child process side)."""

    def __init__(self, host: str, port: int):
        self._lock = threading.Lock()
        self._arrivals: dict[str, list[tuple[float, float, int]]] = {}
        self._subscribed = threading.Event()
        self._client = base_client(
            MqttSettings(host=host, port=port), f"bench-sink-{id(self)}", None, reconnect=True
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        """Subscribe on every (re)connect."""
        client.subscribe(f"{PREFIX}/+/results", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """Record (arrival wall clock, capture wall clock, frame id); never raises."""
        now = time.time()
        try:
            payload = json.loads(msg.payload)
            entry = (now, float(payload["timestamp"]), int(payload["frame_id"]))
        except (ValueError, KeyError, TypeError):
            logger.warning("bench sink: unreadable result on %s", msg.topic)
            return
        with self._lock:
            self._arrivals.setdefault(results_device(msg.topic), []).append(entry)

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the broker acknowledged the subscription."""
        return self._subscribed.wait(timeout)

    def count(self, device: str) -> int:
        """Results received from a device so far."""
        with self._lock:
            return len(self._arrivals.get(device, ()))

    def first(self, device: str) -> float | None:
        """Arrival wall clock of a device's first result."""
        with self._lock:
            entries = self._arrivals.get(device)
            return entries[0][0] if entries else None

    def collect(self, device: str) -> list[tuple[float, float, int]]:
        """Every arrival of a device, in order, and forget them."""
        with self._lock:
            return self._arrivals.pop(device, [])

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


def sink_main(conn: Connection, broker: tuple[str, int] | None, log_level: int) -> None:
    """Child process: start the broker and the subscriber, then answer requests."""
    # Ctrl-C reaches the whole process group; the bench stops us (Sink.stop, or EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s bench-sink: %(message)s")
    embedded = None
    try:
        if broker is None:
            from edge_agent.publishing.embedded_broker import EmbeddedBroker

            embedded = EmbeddedBroker("127.0.0.1", 0)
            embedded.start()
            host, port, kind = "127.0.0.1", embedded.port, EMBEDDED
        else:
            host, port = broker
            kind = "external"
        sub = _Subscriber(host, port)
        if not sub.wait_subscribed(10.0):
            raise PublishError(f"bench sink: no subscription acknowledgement from {host}:{port}")
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        if embedded is not None:
            embedded.stop(5.0)
        return
    conn.send(("ready", host, port, kind))
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # the benchmark went away
            kind, args = msg[0], msg[1:]
            if kind == "count":
                conn.send(sub.count(args[0]))
            elif kind == "first":
                conn.send(sub.first(args[0]))
            elif kind == "collect":
                conn.send(sub.collect(args[0]))
            elif kind == "stop":
                break
    finally:
        sub.close()
        if embedded is not None:
            embedded.stop(5.0)


class Sink:
    """The parent's handle on the sink process.

    Args:
        broker: ``(host, port)`` of an existing broker, or None for an embedded one.
    """

    def __init__(self, broker: tuple[str, int] | None = None):
        ctx = forkserver_context()
        self._conn, child = ctx.Pipe(duplex=True)
        self._process = ctx.Process(
            target=sink_main,
            args=(child, broker, logging.getLogger().getEffectiveLevel()),
            name="edge-agent-bench-sink",
            daemon=True,
        )
        self._child = child
        self.host = ""
        self.port = 0
        self.kind = ""

    @property
    def pid(self) -> int | None:
        """The sink process id."""
        return self._process.pid

    @property
    def protocol(self) -> str:
        """The ``mqtt.protocol`` for the daemon: the embedded broker speaks 3.1.1 only, and
        waiting out an MQTT 5 attempt would count in the cold start's time."""
        if self.kind == EMBEDDED:
            from edge_agent.publishing.embedded_broker import EmbeddedBroker

            return EmbeddedBroker.PROTOCOL
        return "auto"

    def settings(self, client_id: str) -> MqttSettings:
        """The MQTT settings of a daemon publishing to this sink's broker."""
        return MqttSettings(
            host=self.host, port=self.port, client_id=client_id, protocol=self.protocol
        )

    @property
    def description(self) -> str:
        """E.g. ``embedded amqtt 127.0.0.1:40123``."""
        return f"{self.kind} {self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait for the broker and the subscription.

        Raises:
            PublishError: the broker did not start or the subscriber could not connect.
        """
        self._process.start()
        self._child.close()
        msg = self._call_reply(timeout, "starting")
        if msg[0] != "ready":
            self.stop()
            raise PublishError(msg[1])
        _, self.host, self.port, self.kind = msg

    def _call_reply(self, timeout: float, what: str) -> Any:
        """Wait for the next reply.

        Raises:
            PublishError: no reply within ``timeout`` or the process died.
        """
        try:
            if self._conn.poll(timeout):
                return self._conn.recv()
        except (EOFError, OSError) as exc:
            raise PublishError(f"bench sink died while {what}") from exc
        raise PublishError(f"bench sink: no answer within {timeout:.0f}s while {what}")

    def _ask(self, *request: Any) -> Any:
        """Send a request and return the answer."""
        self._conn.send(request)
        return self._call_reply(10.0, request[0])

    def count(self, device: str) -> int:
        """Results received from ``device``."""
        return int(self._ask("count", device))

    def first(self, device: str) -> float | None:
        """Arrival wall clock of the first result of ``device``, None before it."""
        return self._ask("first", device)

    def collect(self, device: str) -> list[tuple[float, float, int]]:
        """``(arrival wall clock, capture wall clock, frame id)`` of each result of ``device``."""
        return self._ask("collect", device)

    def wait_count(self, device: str, count: int, timeout: float) -> int:
        """Wait until ``count`` results of ``device`` arrived (or ``timeout``); the count."""
        deadline = time.monotonic() + timeout
        got = self.count(device)
        while got < count and time.monotonic() < deadline:
            time.sleep(0.05)
            got = self.count(device)
        return got

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the subscriber and the broker; kill the process if it hangs."""
        try:
            self._conn.send(("stop",))
        except (OSError, ValueError):
            pass
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(2.0)
        self._conn.close()
