"""Tier 3: what a Home Assistant recorder would write for a device with events on and the
per-frame results off, on the demo clip (three squares moving; the red one leaves and
comes back at every loop, which ends its event and starts another), over two loops.

Counted from a real subscriber, with the daemon's own discovery configs rendered as Home
Assistant renders them: outside events and snapshots at most one message per second per
camera, and every object entity updated only when its value changes.
"""

from __future__ import annotations

import pytest

from edge_agent.tools.bench.recorder_load import Recorder, format_report, summarize
from tests.support.broker import wait_until
from tests.support.chaos import figure
from tests.support.paths import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DEMO = REPO / "models" / "demo"


def test_events_on_results_off_loads_the_recorder_only_on_change(mqtt_broker, edge_daemon):
    recorder = Recorder(mqtt_broker.host, mqtt_broker.port)
    assert recorder.wait_subscribed(10)
    try:
        daemon = edge_daemon(
            mqtt_broker.port,
            DEMO / "clip.avi",
            DEMO / "color_blobs.tflite",
            DEMO / "labels.txt",
            mqtt={"publish_results": "off"},
            events={"labels": ["red", "green", "blue"]},
            stats={"interval": 10.0},  # the default
        )
        events = daemon.topics.events

        def red_news():
            return [
                m
                for m in recorder.messages()
                if m.topic == events and b'"type":"new"' in m.payload and b'"red"' in m.payload
            ]

        # Two whole loops of the clip in steady state: from red's second event (the first
        # loop carries the start-up's status changes) to its fourth.
        wait_until(lambda: len(red_news()) >= 4, timeout=90, what="red's fourth event")
        start, end = red_news()[1].arrived, red_news()[3].arrived
        assert daemon.stop(timeout=15) == 0
    finally:
        recorder.stop()
    report = summarize(recorder.messages(), start, end, 1, events)
    print(format_report(report))
    assert report.seconds > 18
    assert report.background_per_s_per_camera <= 1.0, report.per_topic
    assert not any(t.endswith("/results") for t in report.per_topic)  # results are off
    objects = [e for e in report.entities if e.topic.startswith(daemon.topics.base + "/cam0/")]
    assert len(objects) >= 7, report.entities  # all, red, green, blue counts and occupancy
    # A count is published only when it changes: one recorder row per message for the
    # count sensors; occupancy reads the same topic and changes less often (1 -> 2 is ON
    # either way), never more.
    counts = [e for e in objects if e.component == "sensor"]
    assert counts and all(e.messages == e.changes for e in counts), counts
    assert all(e.changes <= e.messages for e in objects), objects
    for topic in {e.topic for e in objects}:
        values = [m.payload for m in recorder.messages() if m.topic == topic]
        assert all(a != b for a, b in zip(values, values[1:])), (topic, values)
    assert any(e.changes > 0 for e in counts if "red" in e.entity)  # red left and came back
    rows = sum(e.changes for e in report.entities)
    figure(
        "recorder_load",
        seconds=round(report.seconds, 1),
        background_msgs_per_s=round(report.background_per_s_per_camera, 3),
        events_per_s=round(report.events_per_s, 3),
        recorder_rows=rows,
        rows_per_s=round(rows / report.seconds, 3),
    )
