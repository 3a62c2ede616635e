"""A small MQTT broker (amqtt) run inside this process, for demos and tests.

Used when no broker is reachable (``edge-agent demo``) and by the test fixtures when
``mosquitto`` is not installed. amqtt is asyncio based; :class:`EmbeddedBroker` gives it
its own thread and event loop, so callers stay synchronous. Anonymous access, no TLS,
no persistence: a production deployment uses a real broker (mosquitto, EMQX, ...).
"""

from __future__ import annotations

import asyncio
import logging
import threading

from edge_agent.errors import PublishError

logger = logging.getLogger(__name__)


class EmbeddedBroker:
    """An amqtt broker listening on ``host:port``, served by a background thread.

    Args:
        host: address to bind (``127.0.0.1`` keeps it local).
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        websocket_port: also serve MQTT over WebSocket on this port (any path).
        quiet: raise amqtt's own loggers to WARNING (they log every packet at INFO).
    """

    # amqtt speaks MQTT 3.1.1 only and never answers an MQTT 5 CONNECT: a client set to
    # ``auto`` waits for its CONNACK timeout before falling back, so ours are told.
    PROTOCOL = "3.1.1"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        websocket_port: int | None = None,
        quiet: bool = True,
    ):
        self.host = host
        self.port = port
        self.websocket_port = websocket_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._shutdown_timeout = 2.0
        if quiet:
            for name in ("amqtt", "transitions"):
                if logging.getLogger(name).level == logging.NOTSET:
                    logging.getLogger(name).setLevel(logging.WARNING)

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set()

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; returns once the port accepts connections.

        Args:
            timeout: seconds to wait for the broker to come up.

        Raises:
            PublishError: amqtt is not installed, the port is taken, or startup timed out.
        """
        if self._thread is not None:
            raise PublishError(f"embedded broker {self.host}:{self.port} is already running")
        try:
            import amqtt.broker  # noqa: F401  (fail here, not in the thread)
        except ImportError as exc:
            raise PublishError(
                "the embedded MQTT broker needs amqtt: pip install 'edge-agent[broker]'"
            ) from exc
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt-broker-{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            error = self._error
            self.stop(timeout)
            if error is not None:
                raise PublishError(
                    f"embedded broker cannot listen on {self.host}:{self.port}: {error}"
                ) from error
            raise PublishError(f"embedded broker {self.host}:{self.port}: start timed out")
        logger.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    def stop(self, timeout: float = 10.0) -> bool:
        """Close every client connection and the listener, then end the thread.

        Args:
            timeout: seconds to wait for the shutdown.

        Returns:
            True if the broker thread ended within the timeout.
        """
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return True
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # the loop already ended on its own (startup failure)
        thread.join(timeout)
        ended = not thread.is_alive()
        if ended:
            self._thread = None
            logger.info("embedded MQTT broker on %s:%d stopped", self.host, self.port)
        else:
            logger.error("embedded MQTT broker on %s:%d did not stop", self.host, self.port)
        return ended

    def _run(self) -> None:
        """Thread body: an event loop that runs the broker until asked to stop."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # this thread's loop (amqtt and gather() look it up)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            self._ready.set()
        finally:
            # amqtt can leave broadcast tasks behind; end them before closing the loop.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        """Start amqtt, report readiness, wait for the stop event, shut down."""
        from amqtt.broker import Broker

        self._stop = asyncio.Event()
        listeners = {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}}
        if self.websocket_port is not None:
            listeners["ws"] = {"type": "ws", "bind": f"{self.host}:{self.websocket_port}"}
        config = {
            "listeners": listeners,
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {}},
        }
        broker = Broker(config)
        await broker.start()
        # amqtt keeps its asyncio servers by listener name (no public accessor).
        servers = [s.instance for s in broker._servers.values()]
        if self.port == 0:
            self.port = broker._servers["default"].instance.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        # Stop accepting first, so the port is free for a restart even if amqtt's own
        # shutdown stalls (it waits up to 5 s for in-progress broadcasts).
        for server in servers:
            server.close()
        try:
            await asyncio.wait_for(broker.shutdown(), timeout=self._shutdown_timeout)
        except asyncio.TimeoutError:
            logger.warning("embedded MQTT broker on %s:%d: forced shutdown", self.host, self.port)
