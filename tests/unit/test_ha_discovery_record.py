"""The record of published discovery topics, and which ones are stale."""

from __future__ import annotations

from edge_agent.config import parse_config
from edge_agent.daemon.ha_discovery import (
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
    assert topics.command_filters()[-1] == "ha/x/status"
    assert topics.parse_command("ha/x/status") == "ha/x/status"
    assert topics.parse_command("ha/x/other") is None
    off = parse_config("[mqtt]\nhomeassistant = false\n", env={})
    assert birth_filters(off) == () and "status" not in device_topics(off, "b").command_filters()
