"""Tier 1: the ``[events]``, ``[[track]]`` and ``[[zone]]`` tables and their rules."""

from __future__ import annotations

import pytest

from edge_agent.config import parse_config
from edge_agent.errors import ConfigError

CAMS = '[[camera]]\nname = "front"\nsource = 0\n[[camera]]\nname = "yard"\nsource = 1\n'
ZONE = '[[zone]]\nname = "porch"\ncamera = "front"\npoints = [[0, 0], [0.5, 0], [0.5, 1]]\n'


def parse(text: str):
    return parse_config(text, "config.toml", env={})


def test_zones_tracks_and_events_parse():
    config = parse(
        CAMS
        + ZONE
        + '[[track]]\nlabel = "car"\nmax_age = 10\n'
        + '[events]\nupdate_interval = 2\nlabels = ["car"]\n'
    )
    (zone,) = config.zone
    assert zone.points == ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0)) and zone.anchor == "bottom_center"
    assert config.track[0].label == "car" and config.track[0].max_age == 10.0
    assert config.events.update_interval == 2.0 and config.events.labels == ("car",)
    assert parse(CAMS).zone == () and parse(CAMS).events.enabled is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ZONE.replace('"front"', '"back"'), 'zone[0].camera: no camera named "back"'),
        (ZONE.replace('"porch"', '"yard"'), 'zone[0].name: "yard" is a camera name'),
        (
            ZONE.replace('"porch"', '"events"'),
            'zone[0].name: "events" is a camera name or a reserved',
        ),
        (ZONE + ZONE, "zone[1].name: duplicate zone name (also zone[0])"),
        (
            ZONE.replace("[[0, 0], [0.5, 0], [0.5, 1]]", "[[0, 0], [1, 1]]"),
            "zone[0].points: expected array of at least 3",
        ),
        (ZONE.replace("[0.5, 1]]", "[0.5]]"), "zone[0].points[2]: expected [x, y]"),
        ('[[track]]\nlabel = "a"\n[[track]]\nlabel = "a"\n', "track[1].label: duplicate label"),
        ('[[zone]]\nname = "z"\ncamera = "front"\n', "zone[0].points"),
    ],
)
def test_bad_object_tables_name_the_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse(CAMS + text)
    assert message in str(info.value)
    assert "config.toml" in str(info.value)


def test_reserved_camera_name():
    with pytest.raises(ConfigError, match=r'camera\[0\].name: "cmd" is a reserved topic level'):
        parse('[[camera]]\nname = "cmd"\nsource = 0\n')


FITTED = CAMS.replace("source = 0\n", "source = 0\nfit_model = true\n", 1)


def test_a_fitted_camera_takes_zones_in_fractions_only():
    # Its frame size follows the model, so pixel points would land elsewhere.
    assert parse(FITTED + ZONE).zone[0].points[1] == (0.5, 0.0)
    with pytest.raises(ConfigError) as info:
        parse(FITTED + ZONE.replace("[0.5, 1]]", "[320, 240]]"))
    assert 'zone[0].points: camera "front" has fit_model = true' in str(info.value)
    assert parse(CAMS + ZONE.replace("[0.5, 1]]", "[320, 240]]")).zone  # pixels elsewhere
    with pytest.raises(ConfigError, match="zone.0..points: camera .front. has fit_model"):
        parse(FITTED + ZONE.replace("[[0, 0]", "[[-0.01, 0]"))  # not all in 0..1: pixels


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("width = 320\n", "camera[0].fit_model: sizes the device's mode to the model: remove"),
        ("height = 240\n", "camera[0].fit_model: sizes the device's mode to the model: remove"),
        ("decode_scale = 2\n", "camera[0].decode_scale: camera[0].fit_model sizes a device's"),
    ],
)
def test_fit_model_and_a_size_or_a_reduced_decode_are_refused(extra, message):
    with pytest.raises(ConfigError) as info:
        parse(FITTED.replace("fit_model = true\n", "fit_model = true\n" + extra))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("source", "warned"),
    [
        ("0", False),
        ('"/dev/video2"', False),
        ('" /dev/video2"', False),
        ('"clip.avi"', True),
        ('"rtsp://cam/1"', True),
    ],
)
def test_fit_model_warns_on_sources_that_are_not_devices(source, warned):
    config = parse(f"[[camera]]\nsource = {source}\nfit_model = true\n")
    expected = "config.toml: camera[0].fit_model: applies to V4L2 devices; this source is not one"
    assert config.warnings == ((expected,) if warned else ())
    assert parse(f"[[camera]]\nsource = {source}\n").camera[0].fit_model is False


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        # "all" is the count of every label: its topic and entities are taken.
        ('["person", "all"]', 'events.labels: "all" is the count of every label'),
        # A topic level holds no "/", "+" or "#": both would count on .../front/a_b.
        ('["a/b", "a_b"]', 'events.labels: "a/b" and "a_b" share the count topic level "a_b"'),
        ('["+", "#"]', 'events.labels: "+" and "#" share the count topic level "_"'),
    ],
)
def test_event_labels_sharing_a_count_topic_are_refused(labels, message):
    # Before: check-config passed; the daemon then failed at start on a Home Assistant
    # id collision blamed on camera.name, or (a/b, a_b) two labels' counts overwrote
    # each other on one retained topic read by two entities.
    with pytest.raises(ConfigError) as info:
        parse(CAMS + f"[events]\nlabels = {labels}\n")
    assert message in str(info.value)
    assert parse(CAMS + '[events]\nlabels = ["a/b", "person"]\n').events.labels == (
        "a/b",
        "person",
    )
