"""Tier 1: the object layer of one camera across a change of its frame size."""

from __future__ import annotations

import json

from edge_agent.config import parse_config
from edge_agent.daemon.objects import ObjectService
from edge_agent.inference.postprocess import Result
from edge_agent.publishing.topics import Topics

FPS = 10.0


def test_objects_carry_over_when_the_camera_changes_its_frame_size():
    """A fitted camera reopened in a mode twice as large for a new model: the same
    person keeps its track, its zone and its event; nothing ends or starts again."""
    config = parse_config(
        '[[camera]]\nname = "front"\nsource = 0\nfit_model = true\n'
        '[[zone]]\nname = "porch"\ncamera = "front"\n'
        "points = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]\n"
        '[[track]]\nlabel = "person"\n',
        "config.toml",
        env={},
    )
    events = []

    def publish(topic, payload, *args):
        if topic.endswith("/events"):
            events.append(json.loads(payload))

    service = ObjectService(config, Topics("edge-agent", "box"), publish)
    small = (60.0, 60.0, 120.0, 200.0)  # inside the porch's left half at 320x240
    for i in range(40):
        size, box = ((320, 240), small) if i < 10 else ((640, 480), tuple(2 * v for v in small))
        service.on_frame("front", i / FPS, [Result(0, "person", 0.9, box)], size, False)
    assert [e["type"] for e in events] == ["new"]  # nothing ended at the switch
    service.close()  # ends the event: with the box as it is now, in the new pixels
    new, end = events[0], events[-1]
    assert [e["type"] for e in events[1:]] == ["end"] and end["id"] == new["id"]
    assert new["box"] == list(small) and end["box"] == [2 * v for v in small]
    assert new["zones"] == ["porch"] and end["entered_zones"] == ["porch"]


def test_objects_of_a_camera_that_gives_no_frames_end_after_their_max_age():
    """The stream dies (or a file ends) while a person stands there: no frame comes to
    say the person left, yet the event ends and the counts fall to 0 once the person
    has been unseen for max_age; a camera between frames is left alone."""
    config = parse_config(
        '[[camera]]\nname = "front"\nsource = 0\n[events]\nmax_age = 2.0\nlabels = ["person"]\n',
        "config.toml",
        env={},
    )
    sent = []
    service = ObjectService(config, Topics("edge-agent", "box"), lambda *m: sent.append(m))
    box = (60.0, 60.0, 120.0, 200.0)
    for i in range(10):
        service.on_frame(
            "front", 100.0 + i / FPS, [Result(0, "person", 0.9, box)], (320, 240), False
        )
    last = 100.0 + 9 / FPS
    service.expire("back", last + 60.0)  # a camera that never gave a frame: nothing to end
    service.expire("front", last + 0.5)  # between frames
    service.expire("front", last + 1.5)  # unseen, but for less than max_age
    events = [json.loads(p) for t, p, *_ in sent if t.endswith("/events")]
    assert [e["type"] for e in events] == ["new"]
    service.expire("front", last + 2.5)
    events = [json.loads(p) for t, p, *_ in sent if t.endswith("/events")]
    assert [e["type"] for e in events] == ["new", "end"]
    assert events[1]["end_time"] == round(last, 3)  # when it was last seen, not now
    counts = {t: p for t, p, *_ in sent if not t.endswith("/events")}
    assert counts["edge-agent/box/front/person"] == b"0"
    assert counts["edge-agent/box/front/all"] == b"0"
    # A frame after the outage starts a new event, as after any end.
    for i in range(3):
        service.on_frame(
            "front", last + 30 + i / FPS, [Result(0, "person", 0.9, box)], (320, 240), False
        )
    events = [json.loads(p) for t, p, *_ in sent if t.endswith("/events")]
    assert [e["type"] for e in events] == ["new", "end", "new"]
    assert events[2]["id"] != events[0]["id"]


def test_a_new_run_resets_every_count_an_earlier_run_published(tmp_path):
    """A run killed with a dog in view left front/dog = 1 retained; the next run, before
    any frame, publishes 0 there (dog is in no config) and on its own counts."""
    from edge_agent.daemon.count_record import CountRecord

    config = parse_config(
        f'[device]\nstate_dir = "{tmp_path}"\n'
        '[[camera]]\nname = "front"\nsource = 0\n[events]\nlabels = ["person"]\n'
        '[[zone]]\nname = "porch"\ncamera = "front"\npoints = [[0, 0], [1, 0], [1, 1], [0, 1]]\n',
        "config.toml",
        env={},
    )
    topics = Topics("edge-agent", "box")
    first: dict[str, bytes] = {}
    killed = ObjectService(
        config, topics, lambda t, p, *a: first.__setitem__(t, p), CountRecord(str(tmp_path))
    )
    for i in range(3):
        box = (60.0, 60.0, 120.0, 200.0)
        killed.on_frame("front", 100.0 + i / FPS, [Result(0, "dog", 0.9, box)], (320, 240), False)
    assert first["edge-agent/box/front/dog"] == b"1"
    assert first["edge-agent/box/porch/dog"] == b"1"
    # No close(): the run was killed. The next one is given no frame at all.
    second: dict[str, bytes] = {}
    ObjectService(
        config, topics, lambda t, p, *a: second.__setitem__(t, p), CountRecord(str(tmp_path))
    )
    places = ("front", "porch")
    expected = {f"edge-agent/box/{p}/{label}" for p in places for label in ("dog", "person", "all")}
    assert set(second) == expected and set(second.values()) == {b"0"}


def test_an_unreadable_count_record_is_an_empty_one(tmp_path, caplog):
    from edge_agent.daemon.count_record import CountRecord

    (tmp_path / "counts.json").write_text("{not json")
    assert CountRecord(str(tmp_path)).topics == frozenset()
    assert "counts.json: unreadable" in caplog.text
    # Edited by hand: a string is no list of topics, and what cannot be published is left.
    (tmp_path / "counts.json").write_text('{"topics": "abc"}')
    assert CountRecord(str(tmp_path)).topics == frozenset()
    (tmp_path / "counts.json").write_text(
        '{"topics": ["e/box/front/all", "e/+/x", "e/#", "e//x", "", 7, "e/box/front/dog"]}'
    )
    assert CountRecord(str(tmp_path)).topics == {"e/box/front/all", "e/box/front/dog"}


def test_a_camera_slower_than_max_age_keeps_its_objects_between_frames():
    """A camera at 0.5 fps (or a pipeline that gets to it every 2 s): the pipeline's
    idle rounds between its frames must not end what the next frame sees again, as a
    frame 2 s later matches it (max_age is for objects unseen, not for frames unseen)."""
    config = parse_config(
        '[[camera]]\nname = "front"\nsource = 0\nfps = 0.5\n[events]\nlabels = ["person"]\n',
        "config.toml",
        env={},
    )
    sent = []
    service = ObjectService(config, Topics("edge-agent", "box"), lambda *m: sent.append(m))
    box = (60.0, 60.0, 120.0, 200.0)
    for i in range(10):
        t = 100.0 + 2.0 * i
        service.on_frame("front", t, [Result(0, "person", 0.9, box)], (320, 240), False)
        for k in range(1, 4):  # the pipeline's idle rounds, every 0.5 s
            service.expire("front", t + 0.5 * k)
    events = [json.loads(p) for t, p, *_ in sent if t.endswith("/events")]
    assert [e["type"] for e in events] == ["new"]
    counts = [p for t, p, *_ in sent if t == "edge-agent/box/front/person"]
    assert counts == [b"0", b"1"]
    # The camera then stops: its objects end once it is clearly overdue.
    last = 100.0 + 18.0
    for k in range(1, 40):
        service.expire("front", last + 0.5 * k)
    events = [json.loads(p) for t, p, *_ in sent if t.endswith("/events")]
    assert [e["type"] for e in events] == ["new", "end"]
    assert events[1]["end_time"] == last


def test_a_start_clears_the_retained_snapshots_no_camera_makes_any_more(tmp_path):
    """A run published front/dog/snapshot (retained). The next start whose config has no
    camera "front" (renamed "gate"), or snapshots off, clears it with an empty retained
    message; one that still has "front" with snapshots leaves it."""
    import numpy as np

    from edge_agent.daemon.count_record import CountRecord
    from edge_agent.daemon.objects import start_objects

    def config(camera: str, events: str = "") -> object:
        return parse_config(
            f'[device]\nstate_dir = "{tmp_path}"\n'
            f'[[camera]]\nname = "{camera}"\nsource = 0\n[events]\n{events}',
            "config.toml",
            env={},
        )

    topics = Topics("edge-agent", "box")
    snapshot = "edge-agent/box/front/dog/snapshot"
    first: dict[str, bytes] = {}
    service = ObjectService(
        config("front"), topics, lambda t, p, *a: first.__setitem__(t, p), CountRecord(tmp_path)
    )
    image = np.zeros((240, 320, 3), np.uint8)
    for i in range(3):
        box = (60.0, 60.0, 120.0, 200.0)
        service.on_frame(
            "front", 100.0 + i / FPS, [Result(0, "dog", 0.9, box)], (320, 240), False, image
        )
    service.close()
    assert first[snapshot][:2] == b"\xff\xd8"  # a JPEG, retained on the broker

    def start(cfg) -> dict[str, bytes]:
        sent: dict[str, bytes] = {}
        objects = start_objects(cfg, topics, lambda t, p, *a: sent.__setitem__(t, p))
        if objects is not None:
            objects.close()
        return sent

    assert snapshot not in start(config("front"))
    assert start(config("gate"))[snapshot] == b""
    assert start(config("front", "snapshots = false\n"))[snapshot] == b""
    assert start(config("front", "enabled = false\n"))[snapshot] == b""
    assert snapshot not in start(config("front"))  # front makes it again: left alone


def test_a_classifiers_events_carry_no_box():
    """A classifier's object is its top-1 label over the whole frame: its events' box and
    top_box are null, not [0, 0, 1, 1] read as a 1-pixel box in the frame's corner."""
    config = parse_config('[[camera]]\nname = "front"\nsource = 0\n', "config.toml", env={})
    events = []

    def publish(topic, payload, *args):
        if topic.endswith("/events"):
            events.append(json.loads(payload))

    service = ObjectService(config, Topics("edge-agent", "box"), publish)
    for i in range(5):
        frame = [Result(3, "cat", 0.9), Result(1, "dog", 0.05)]
        service.on_frame("front", 100.0 + i / FPS, frame, (640, 480), True)
    service.close()
    assert [e["type"] for e in events] == ["new", "end"]
    assert all(e["box"] is None and e["top_box"] is None for e in events), events


def test_a_classifiers_object_is_in_no_zone():
    """A classifier does not say where its label is: its object must be in no zone. Its
    whole-frame stand-in box (0, 0, 1, 1) was tested as pixels, so it entered any zone
    holding the frame's top-left corner and was counted there."""
    config = parse_config(
        '[[camera]]\nname = "front"\nsource = 0\n'
        '[[zone]]\nname = "corner"\ncamera = "front"\n'
        "points = [[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]]\n",
        "config.toml",
        env={},
    )
    sent: dict[str, list[bytes]] = {}
    service = ObjectService(
        config, Topics("edge-agent", "box"), lambda t, p, *a: sent.setdefault(t, []).append(p)
    )
    for i in range(5):
        service.on_frame("front", 100.0 + i / FPS, [Result(3, "cat", 0.9)], (640, 480), True)
    events = [json.loads(p) for p in sent["edge-agent/box/events"]]
    assert [e["zones"] for e in events] == [[]]
    assert sent["edge-agent/box/front/cat"][-1] == b"1"
    assert set(sent["edge-agent/box/corner/all"]) == {b"0"}, sent["edge-agent/box/corner/all"]


def test_frames_an_object_is_not_seen_in_do_not_count_towards_min_frames():
    """``min_frames`` = 3: a person seen on the porch in 2 frames, then hidden, is not
    on the porch; the frames it was unseen in used to count with its last box."""
    config = parse_config(
        '[[camera]]\nname = "front"\nsource = 0\n'
        '[[zone]]\nname = "porch"\ncamera = "front"\nmin_frames = 3\n'
        "points = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]\n",
        "config.toml",
        env={},
    )
    sent: dict[str, list[bytes]] = {}
    service = ObjectService(
        config, Topics("edge-agent", "box"), lambda t, p, *a: sent.setdefault(t, []).append(p)
    )
    person = [Result(0, "person", 0.9, (60.0, 60.0, 120.0, 200.0))]
    for i in range(6):  # seen in frames 0 and 1, then hidden (max_age 1 s: still open)
        service.on_frame("front", 100.0 + i / FPS, person if i < 2 else [], (320, 240), False)
    events = [json.loads(p) for p in sent["edge-agent/box/events"]]
    assert [(e["type"], e["zones"]) for e in events] == [("new", [])], events
    assert set(sent["edge-agent/box/porch/all"]) == {b"0"}


class _Clock:
    """A wall clock that can step (NTP setting the time of a box without RTC) over a
    steady monotonic one."""

    def __init__(self):
        self.mono, self.step = 50.0, 0.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return 1000.0 + self.mono + self.step


def _stepped_clock_run(monkeypatch, step: float, seen, frames: int = 60) -> list[dict]:
    """A person in view of 10 fps frames (``seen(i)``), the wall clock set by ``step``
    seconds at frame 20, then the camera silent for 3 s; the events."""
    from edge_agent.daemon import objects

    clock = _Clock()
    monkeypatch.setattr(objects, "time", clock, raising=False)
    config = parse_config(
        '[[camera]]\nname = "front"\nsource = 0\n[events]\nmax_age = 1.0\n', "c.toml", env={}
    )
    events = []

    def publish(topic, payload, *args):
        if topic.endswith("/events"):
            events.append(json.loads(payload))

    service = ObjectService(config, Topics("edge-agent", "box"), publish)
    for i in range(frames):
        clock.mono += 1 / FPS
        if i == 20:
            clock.step = step  # the wall clock is set, the scene goes on
        person = [Result(0, "person", 0.9, (60.0, 60.0, 120.0, 200.0))] if seen(i) else []
        service.on_frame("front", clock.time(), person, (320, 240), False)
    for _ in range(30):  # the camera stops giving frames: the pipeline ages its objects
        clock.mono += 0.1
        service.expire("front", clock.time())
    return events


def test_a_wall_clock_set_forward_does_not_end_an_object_missed_at_that_moment(monkeypatch):
    """A box without RTC starts before NTP, which then sets its clock an hour forward
    just as a frame misses the person in view: the person stays one event (it used to
    end, an hour unseen, and start again as a new one)."""
    events = _stepped_clock_run(monkeypatch, 3600.0, lambda i: i != 20)
    assert [e["type"] for e in events] == ["new", "end"], [(e["type"], e["id"]) for e in events]


def test_a_wall_clock_set_back_keeps_event_times_in_order(monkeypatch):
    """The clock set an hour back while a person is in view: the event's end is after its
    start in the clock as it is now (it was an hour before it)."""
    events = _stepped_clock_run(monkeypatch, -3600.0, lambda i: i < 40)
    assert [e["type"] for e in events] == ["new", "end"], [e["type"] for e in events]
    end = events[-1]
    assert 0 < end["end_time"] - end["start_time"] < 10, end


def test_a_camera_that_stops_after_the_clock_was_set_back_still_ends_its_objects(monkeypatch):
    """Set an hour back, then the camera stops with the person in view: the person ends
    after max_age (it stayed in view, count 1, until the clock caught up an hour later)."""
    events = _stepped_clock_run(monkeypatch, -3600.0, lambda i: True)
    assert [e["type"] for e in events] == ["new", "end"], [e["type"] for e in events]


def test_every_object_two_cameras_confirm_at_once_gets_its_snapshot():
    """Two cameras each confirm 12 objects in the same instant while the snapshot thread
    is busy: each of the 24 gets its snapshot (16 per camera may be kept)."""
    import threading

    import numpy as np

    config = parse_config(
        '[[camera]]\nname = "a"\nsource = 0\n[[camera]]\nname = "b"\nsource = 1\n',
        "config.toml",
        env={},
    )
    busy, snapshots = threading.Event(), set()

    def publish(topic, payload, *args):
        if topic.endswith("/snapshot"):
            busy.wait(10)  # the first JPEG holds the thread until every object waits
            snapshots.add(topic)

    service = ObjectService(config, Topics("edge-agent", "box"), publish)
    image = np.zeros((240, 320, 3), np.uint8)
    labels = [f"l{i}" for i in range(12)]
    for i in range(2):
        for camera in ("a", "b"):
            results = [
                Result(n, label, 0.9, (20.0 * n, 10.0, 20.0 * n + 15, 40.0))
                for n, label in enumerate(labels)
            ]
            service.on_frame(camera, 100.0 + i / FPS, results, (320, 240), False, image)
    busy.set()
    service.close(5.0)
    assert len(snapshots) == 24, sorted(snapshots)


def test_a_start_clears_the_detect_state_of_a_camera_no_more_configured(tmp_path):
    """A run had camera "front", whose detection switch state is retained; the next one
    has it renamed "gate": front's state is cleared (a consumer listing the cameras by
    their switches saw a ghost), gate's is left to the switch."""
    from edge_agent.daemon.objects import start_objects

    def config(camera: str) -> object:
        return parse_config(
            f'[device]\nstate_dir = "{tmp_path}"\n[[camera]]\nname = "{camera}"\nsource = 0\n',
            "config.toml",
            env={},
        )

    topics = Topics("edge-agent", "box")

    def start(cfg) -> dict[str, bytes]:
        sent: dict[str, bytes] = {}
        objects = start_objects(cfg, topics, lambda t, p, *a: sent.__setitem__(t, p))
        if objects is not None:
            objects.close()
        return sent

    assert "edge-agent/box/front/detect/state" not in start(config("front"))
    renamed = start(config("gate"))
    assert renamed["edge-agent/box/front/detect/state"] == b""
    assert "edge-agent/box/gate/detect/state" not in renamed
