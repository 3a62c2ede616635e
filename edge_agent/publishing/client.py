"""MQTT publishing with at-least-once, in-order delivery of results across outages.

Design (one thread, :class:`MqttPublisher`'s own, does all MQTT and spool work):

* ``publish()`` only appends to an in-memory queue and wakes the thread (:mod:`.waker`),
  so the caller (the inference pipeline) never blocks on the network or the disk.
* Each connection uses a *fresh* paho client (clean session) through paho's external
  loop: paho never retransmits after a reconnect; retransmission is ours.
* Durable messages (results) are tracked until the broker acknowledges them (PUBACK for
  QoS 1). When the connection drops, every unacknowledged one is appended to the on-disk
  :class:`~edge_agent.publishing.spool.Spool` in production order, as are new ones while
  disconnected. After reconnecting the spool is replayed *first* and committed only on
  PUBACK; newer messages wait until all of it is sent: no loss, no reordering, and a
  message whose PUBACK was lost is delivered twice (at-least-once, as with any QoS 1
  flow). Durability needs QoS >= 1 (with QoS 0 "acknowledged" means "written").
* No durable message stays only in memory longer than ``max_unacked_s``, even on a
  black-holed link; without a usable spool ``storage_error`` says so (:mod:`~.durable`).
* Non-durable messages (stats) are dropped while disconnected (``dropped`` counter);
  retained ones (status, model, discovery) are kept per topic, re-sent on reconnect.
* The LWT is retained ``offline`` on ``available``; after CONNACK the thread subscribes
  the command topics and after their SUBACK publishes retained ``online``, so both survive
  reconnects (a broker without retained messages gets them unretained, and again through
  :meth:`MqttPublisher.republish_latest`). Each connect runs in a connector thread under
  ``connect_timeout`` (:mod:`.connector`): this thread keeps spooling and can always stop.
  ``stop()`` publishes ``offline`` before its clean DISCONNECT (which suppresses the LWT).
  Commands go to the owner through :mod:`.incoming`; when to reconnect, and to which of
  ``mqtt.hosts``, is :mod:`.reconnect`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.errors import PublishError
from edge_agent.publishing.connection import Connection
from edge_agent.publishing.connector import JOIN_S, Dialer
from edge_agent.publishing.delivery import Delivery
from edge_agent.publishing.durable import Durability
from edge_agent.publishing.incoming import Incoming
from edge_agent.publishing.outbox import InflightWindow, Outbox, Outgoing
from edge_agent.publishing.reconnect import Reconnects
from edge_agent.publishing.refusals import BrokerProblems
from edge_agent.publishing.settings import MqttSettings, encode_payload, ssl_context
from edge_agent.publishing.spool import Position
from edge_agent.publishing.topics import Topics
from edge_agent.publishing.waker import Waker
from edge_agent.scheduling import yield_to_worker

logger = logging.getLogger(__name__)

__all__ = ["MqttPublisher", "MqttSettings"]


class MqttPublisher:
    """Publishes to one broker from one owned thread; see the module docstring.

    Args:
        settings: connection and publishing settings.
        topics: the device's topic layout.
        spool_dir: directory of the on-disk spool (e.g. ``{state_dir}/spool``).
        on_command: called as ``on_command(name, payload, topic)`` for each command
            (``name`` like ``"model/update"``) in the publisher thread: return quickly,
            hand long work to your own worker. Exceptions are logged, never propagated.
        on_connection_change: called with True after each CONNACK and False when the
            connection is lost or closed, in the publisher thread.

    Raises:
        ConfigError: invalid settings or unusable TLS files.
    """

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        spool_dir: str | Path,
        *,
        on_command: Callable[[str, bytes, str], None] | None = None,
        on_connection_change: Callable[[bool], None] | None = None,
    ):
        settings.validate()
        self.settings, self.topics = settings, topics
        self._ssl = ssl_context(settings)
        self._spool_dir = Path(spool_dir)
        self._where = ",".join(str(e) for e in settings.endpoints())
        self._incoming = Incoming(
            topics,
            settings.accept_retained_commands,
            on_command,
            on_connection_change,
            self._where,
            # status and model state again (RabbitMQ gives wildcards no retained message)
            lambda: [self._outbox.repeat(t) for t in (topics.status, topics.model)],
        )
        self._outbox = Outbox(settings.max_queued, (topics.status,), self._where)
        self._inflight = InflightWindow()
        self._waker = Waker()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._store = Durability(
            self._spool_dir,
            settings.spool_max_bytes,
            settings.max_unacked_s,
            self._outbox,
            self._inflight,
            self._where,
        )
        self._conn: Connection | None = None
        self._drain_until = self._stop_deadline = 0.0
        self._replay_pos: Position | None = None
        self._reconnects = Reconnects(settings)
        self._dialer = Dialer(self._reconnects, self._waker, settings.connect_timeout, self._where)
        self._problems = BrokerProblems(self._where)
        self.retain_available = True  # the broker keeps retained messages (publisher thread)
        self._delivery = Delivery(self._inflight, self._store, self._problems)

    @property
    def storage_error(self) -> str:
        """Why results are not durable right now ("" while the spool works)."""
        return self._store.storage_error

    @property
    def error(self) -> str:
        """The last problem the broker link reported ("" if none): a refused publish, a
        discarded oversized packet, a session closed right after CONNACK."""
        return self._problems.error

    @property
    def connected(self) -> bool:
        """True while a broker connection is up (CONNACK received)."""
        return (conn := self._conn) is not None and conn.connected

    @property
    def broker(self) -> str:
        """``host:port`` of the broker connected to ("" while disconnected)."""
        return c.where if (c := self._conn) is not None and c.connected else ""

    def wait_connected(self, timeout: float) -> bool:
        """True once connected with the command subscriptions acknowledged, within
        ``timeout`` seconds."""
        return self._ready.wait(timeout)

    def start(self) -> None:
        """Open the spool and start the publisher thread (it connects in the background).

        A spool that cannot be opened (read-only, full or broken storage, or locked by
        another process) does not stop publishing: :attr:`storage_error` says why results
        are not durable, and the thread re-opens it every few seconds.
        """
        if self._thread is not None:
            return
        self._store.open_if_due()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Deliver what is pending, publish ``offline``, disconnect, spool the rest, join.

        Args:
            timeout: overall seconds; up to 60% of it is spent delivering what is queued.

        Returns:
            True if the thread ended within the timeout.
        """
        thread = self._thread
        if thread is None:
            return True
        now = time.monotonic()
        self._drain_until, self._stop_deadline = now + 0.6 * timeout, now + 0.9 * timeout
        self._stop.set()
        self._waker.wake()
        thread.join(timeout)
        if thread.is_alive():
            logger.error("mqtt %s: publisher thread did not stop in %.1fs", self._where, timeout)
            return False
        self._thread = None
        return True

    def publish(
        self,
        topic: str,
        payload: bytes | str | dict | list,
        qos: int = 1,
        retain: bool = False,
        *,
        durable: bool = False,
        urgent: bool = True,
    ) -> None:
        """Queue a message; never blocks and never raises for broker problems.

        Args:
            topic: the topic (no wildcards).
            payload: bytes, str (UTF-8) or dict/list (JSON).
            qos: 0, 1 or 2.
            retain: set the retain flag. Non-durable retained messages are kept as the
                topic's latest value and re-published after every reconnect.
            durable: never lose it (spooled while disconnected, replayed in order).
            urgent: False lets it wait up to ``waker.SOON_S`` for the next batch (it
                repeats what was said: no wake-up of its own); order is kept.

        Raises:
            PublishError: invalid topic, QoS or payload (a caller bug, not an outage).
        """
        if not topic or any(c in topic for c in "+#\0") or qos not in (0, 1, 2):
            raise PublishError(f"invalid topic {topic!r} or qos {qos!r}")
        self._outbox.put(
            Outgoing(topic, encode_payload(topic, payload), qos, retain, durable, time.monotonic())
        )
        self._waker.wake() if urgent else self._waker.wake_soon()

    def publish_result(self, payload: bytes | str | dict, *, urgent: bool = True) -> None:
        """A result on the ``results`` topic: durable, QoS ``qos_results``."""
        results, qos = self.topics.results, self.settings.qos_results
        self.publish(results, payload, qos, durable=True, urgent=urgent)

    def publish_stats(self, payload: bytes | str | dict) -> None:
        """Statistics on the ``stats`` topic: best effort, QoS ``qos_stats``."""
        self.publish(self.topics.stats, payload, self.settings.qos_stats)

    def publish_status(self, payload: bytes | str | dict) -> None:
        """Daemon status on the ``status`` topic (retained if ``retain_status``)."""
        self.publish(self.topics.status, payload, 1, self.settings.retain_status)

    def publish_model(self, payload: bytes | str | dict) -> None:
        """Model and update status on the retained ``model`` topic: durable (each state may
        be the one answer to a request); the latest is re-published after a reconnect."""
        self.publish(self.topics.model, payload, 1, True, durable=True)

    def stats(self) -> dict[str, Any]:
        """Counters for the stats topic and the logs."""
        return {
            "connected": self.connected,
            "broker": self.broker,
            "published": self._delivery.published,
            "refused": self._problems.refused,  # PUBACK with a failure reason: not delivered
            "oversized": self._problems.oversized,  # incoming packets read and discarded
            "replayed": self._delivery.replayed,
            "dropped": self._store.dropped + self._outbox.overflowed,
            "queued": len(self._outbox),
            "inflight": len(self._inflight),
            **self._reconnects.counts(),
            "commands": self._incoming.commands,
            **self._store.stats(),
        }

    def republish_latest(self) -> None:
        """On a broker that keeps no retained messages, every retained value and ``online``
        again: a subscriber that just came (Home Assistant's birth) has none of them."""
        if not self.retain_available:
            self._outbox.mark_retained_dirty()
            self.publish(self.topics.available, b"online", 1)

    def durability(self) -> dict[str, int]:
        """What may be lost: the last run's bound, the spool's dropped records, results
        lost from memory without a spool, and the publishes the broker refused."""
        stats = self._store.stats()
        out = {k: stats[k] for k in ("possibly_lost_last_run", "spool_dropped", "lost")}
        return {**out, "refused": self._problems.refused}

    # -- the publisher thread -----------------------------------------------------------

    def _run(self) -> None:
        """Thread body: connect, move messages, reconnect with backoff, until stopped."""
        yield_to_worker()  # woken once per result: it must not preempt the worker
        tick = min(1.0, self._store.overdue_s / 2)  # how late an overdue result is seen
        while not self._stop.is_set():
            try:
                self._store.open_if_due()
                if self._conn is None:
                    self._offline_step()
                elif not self._conn.step(tick, self._waker):
                    self._teardown(self._conn.error or "connection lost")
                elif self._conn.connected:
                    if self._conn.subscribed:
                        self._ready.set()
                    self._pump()
                last = self._store.secure_overdue()
                if last is not None:
                    self._replay_pos = last  # already on the wire: replay goes on after it
                self._store.sync()
            except Exception:
                logger.exception("mqtt %s: unexpected error, reconnecting", self._where)
                try:
                    self._teardown("internal error")
                except Exception:
                    logger.exception("mqtt %s: error while recovering", self._where)
                self._stop.wait(0.5)  # never spin on a persistent fault
        try:
            self._shutdown()
        except Exception:
            logger.exception("mqtt %s: error during shutdown", self._where)
        finally:
            self._store.close()

    def _offline_step(self) -> None:
        """While disconnected: spool durable messages, drop the rest, connect when due
        (in a connector thread: this thread never blocks on a connect)."""
        self._store.spool_queue()
        self._conn = self._dialer.step(self._new_connection)

    def _new_connection(self) -> Connection:
        """The next attempt's connection (not opened yet)."""
        return Connection(
            self.settings,
            self.topics,
            self._ssl,
            on_connected=self._on_connected,
            on_ack=self._delivery.ack,
            on_message=self._incoming.message,
            problems=self._problems,
            **self._reconnects.attempt()._asdict(),
        )

    def _pump(self) -> None:
        """Connected: retained latest values, then the spool in order, then the queue."""
        conn, store, send = self._conn, self._store, self._delivery.send
        with conn.corked(len(self._outbox) > 1 or store.pending > 0):
            for msg in self._outbox.take_dirty(conn.quota, conn.probing):  # Receive Maximum
                self._delivery.publish(conn, msg._replace(retain=True))
            window = min(self.settings.max_inflight - len(self._inflight), conn.quota)
            if window > 0 and store.pending:
                for m in store.read(window, after=self._replay_pos):
                    send(conn, Outgoing(m.topic, m.payload, m.qos, m.retain, True), m.position)
                    self._replay_pos = m.position
                    window -= 1
            if store.pending and store.read(1, after=self._replay_pos):
                return  # newer messages wait until the whole spool is on the wire
            while window > 0 and len(self._outbox) and conn.quota > 0:
                msg = self._outbox.pop()
                if msg.durable:
                    send(conn, msg)
                    window -= 1
                elif self._delivery.publish(conn, msg):
                    self._delivery.published += 1

    def _teardown(self, reason: str, *, clean: bool = False) -> None:
        """Forget the connection; unacknowledged durable messages go to the spool, in order."""
        conn, self._conn = self._conn, None
        self._ready.clear()
        was_connected = conn is not None and conn.connected
        if conn is not None:
            conn.close(clean=clean, deadline=self._stop_deadline)
        self._delivery.settle(self._inflight.acked_held())  # else counted "possibly lost"
        self._outbox.push_front(self._inflight.reset())  # older than anything queued
        self._replay_pos = None
        self._store.spool_queue()
        if not was_connected:
            if not self._stop.is_set():
                unanswered = conn is not None and conn.opened and not conn.answered
                refused = conn is not None and conn.retain_refused
                self._reconnects.failed(reason, unanswered=unanswered, retain_refused=refused)
            return
        pending = self._store.pending
        if clean:
            logger.info("mqtt %s: disconnected; %d messages spooled", conn.where, pending)
        else:
            logger.warning("mqtt %s: %s; %d messages spooled", conn.where, reason, pending)
            self._problems.link_hint(self._reconnects.lost(reason))
            self._delivery.lost(conn.suspect())
        self._incoming.connection(False)

    def _shutdown(self) -> None:
        """On stop: deliver what is pending until the drain deadline, then say goodbye."""
        while self._conn is None and self._dialer.connecting:
            if time.monotonic() >= self._drain_until:  # a connect under way may still
                break  # deliver the last words (a daemon that failed to start says so)
            self._conn = self._dialer.step(self._new_connection)
        while self._conn is not None and time.monotonic() < self._drain_until:
            if self._conn.connected:
                self._pump()
                if self._outbox.idle and not (len(self._inflight) or self._store.pending):
                    break
            if not self._conn.step(0.05):
                self._teardown(self._conn.error or "connection lost")
        self._store.spool_queue(retry_now=True)  # one last attempt to spool what is left
        self._teardown("stopping", clean=True)
        self._dialer.close(min(self._stop_deadline, time.monotonic() + JOIN_S))
        if lost := len(self._outbox):
            logger.error("mqtt %s: %d messages lost at stop", self._where, lost)
        logger.info("mqtt %s: stopped %s", self._where, self.stats())

    # -- called from the connection's paho callbacks (publisher thread, never raise) -----

    def _on_connected(self) -> None:
        """CONNACK: reset the backoff, re-publish retained values, tell the owner."""
        conn = self._conn
        self.retain_available = self._reconnects.connected(conn is None or conn.retains)
        self._outbox.mark_retained_dirty()
        where, pending = self._reconnects.broker, self._store.pending
        logger.info("mqtt %s: connected, %d spooled to replay", where, pending)
        self._incoming.connection(True)
