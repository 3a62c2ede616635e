"""The record of published discovery topics, and which ones are stale."""

from __future__ import annotations

import json
import threading

from edge_agent.config import parse_config
from edge_agent.daemon.ha_discovery import (
    HaDiscovery,
    Record,
    birth_filters,
    device_topics,
    read_record,
    stale_topics,
    write_record,
)


def test_stale_topics_are_those_recorded_and_no_longer_produced():
    record = Record(frozenset({"a", "b"}), frozenset({"c"}))
    assert stale_topics(record, {"a", "d"}) == {"b", "c"}
    assert stale_topics(Record(), {"a"}) == frozenset()


def test_record_round_trip_and_unreadable_record(tmp_path, caplog):
    path = tmp_path / "ha_discovery.json"
    assert read_record(path) == Record()  # first start: nothing known
    write_record(path, Record(frozenset({"x/y/config"}), frozenset({"old/config"})))
    assert read_record(path) == Record(frozenset({"x/y/config"}), frozenset({"old/config"}))
    path.write_text("{not json")
    assert read_record(path) == Record()
    assert "cannot be removed automatically" in caplog.text


def test_the_birth_topic_is_subscribed_with_the_commands():
    cfg = parse_config('[mqtt]\ndiscovery_prefix = "ha/x"\n', env={})
    topics = device_topics(cfg, "box1")
    # Home Assistant's birth topic is its own option: its default is heard too.
    assert topics.command_filters()[-2:] == ["ha/x/status", "homeassistant/status"]
    assert topics.parse_command("ha/x/status") == "ha/x/status"
    assert topics.parse_command("homeassistant/status") == "homeassistant/status"
    default = parse_config("", env={})
    assert birth_filters(default) == ("homeassistant/status",)
    assert topics.parse_command("ha/x/other") is None
    off = parse_config("[mqtt]\nhomeassistant = false\n", env={})
    assert birth_filters(off) == () and "status" not in device_topics(off, "b").command_filters()


class _HeldBroker:
    """Keeps the last retained payload per topic, like the broker. The first publish from
    the birth answer's timer thread is held until the reload finished (at most 1 s)."""

    connected = True

    def __init__(self):
        self.retained: dict[str, bytes] = {}
        self.timer_publishing = threading.Event()
        self.reloaded = threading.Event()
        self.timer: threading.Thread | None = None

    def publish(self, topic, payload, qos=0, retain=False, **kw):
        timer = isinstance(threading.current_thread(), threading.Timer)
        if timer and not self.timer_publishing.is_set():
            self.timer = threading.current_thread()
            self.timer_publishing.set()
            self.reloaded.wait(1.0)
        self.retained[topic] = payload

    def republish_latest(self):
        """A broker that keeps retained messages: nothing to send again."""


def _config(state_dir, interval):
    return parse_config(
        f'[device]\nid = "box1"\nstate_dir = "{state_dir}"\n'
        f'[[camera]]\nname = "door"\nsource = "synthetic"\n[stats]\ninterval = {interval}\n',
        env={},
    )


def test_a_reload_during_the_birth_answer_leaves_the_new_configs_on_the_broker(tmp_path):
    """The birth answer re-sends every config from a timer thread; a reload changing
    expire_after meanwhile must not be overwritten by the answer's older payloads."""
    first = _config(tmp_path, 5)
    broker = _HeldBroker()
    discovery = HaDiscovery(broker, device_topics(first, "box1"), first, max_delay=0.01)
    discovery.publish(first, events=False)
    discovery.handle("homeassistant/status", b"online")
    assert broker.timer_publishing.wait(5)
    reload = threading.Thread(
        target=discovery.publish, args=(_config(tmp_path, 60),), kwargs={"events": False}
    )
    reload.start()
    reload.join(0.2)  # blocked behind the answer now, or done on the old code
    broker.reloaded.set()
    reload.join(5)
    broker.timer.join(5)  # the answer has sent everything it was going to send
    discovery.close()
    configs = {t: json.loads(p) for t, p in broker.retained.items() if p}
    expiring = {t: c["expire_after"] for t, c in configs.items() if "expire_after" in c}
    assert expiring and set(expiring.values()) == {180}, expiring
