"""Topic layout, command parsing and topic-safety validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import ConfigError
from edge_agent.publishing.topics import Topics


def test_device_topics():
    t = Topics("site1/edge", "cam-01", groups=["lobby", "all"])
    assert t.available == "site1/edge/cam-01/available"
    assert t.results == "site1/edge/cam-01/results"
    assert t.stats == "site1/edge/cam-01/stats"
    assert t.status == "site1/edge/cam-01/status"
    assert t.model == "site1/edge/cam-01/model"
    assert t.command_filters() == [
        "site1/edge/cam-01/cmd/#",
        "site1/edge/group/lobby/cmd/#",
        "site1/edge/group/all/cmd/#",
    ]


def test_duplicate_groups_subscribe_once():
    assert Topics("edge", "d1", ["a", "a", "b"]).groups == ("a", "b")


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        ("edge/d1/cmd/model/update", "model/update"),
        ("edge/d1/cmd/restart", "restart"),
        ("edge/group/lobby/cmd/model/update", "model/update"),
        ("edge/d1/cmd/", None),  # no command name
        ("edge/d1/cmd/model//update", None),  # empty level
        ("edge/d1/cmd", None),
        ("edge/d2/cmd/restart", None),  # another device
        ("edge/group/other/cmd/restart", None),  # a group we are not in
        ("edge/d1/results", None),
        ("other/d1/cmd/restart", None),
    ],
)
def test_parse_command(topic, name):
    assert Topics("edge", "d1", ["lobby"]).parse_command(topic) == name


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"prefix": "edge", "device_id": "a/b"}, "device_id"),
        ({"prefix": "edge", "device_id": "cam+1"}, "device_id"),
        ({"prefix": "edge", "device_id": "cam#"}, "device_id"),
        ({"prefix": "edge", "device_id": ""}, "device_id"),
        ({"prefix": "edge", "device_id": "cam 1"}, "device_id"),
        ({"prefix": "edge", "device_id": "$SYS"}, "device_id"),
        ({"prefix": "edge", "device_id": "x" * 65}, "device_id"),
        ({"prefix": "edge", "device_id": "group"}, "device_id"),
        ({"prefix": "", "device_id": "d1"}, "prefix"),
        ({"prefix": "edge/", "device_id": "d1"}, "prefix"),
        ({"prefix": "/edge", "device_id": "d1"}, "prefix"),
        ({"prefix": "ed#ge", "device_id": "d1"}, "prefix"),
        ({"prefix": "edge", "device_id": "d1", "groups": ["ok", "no/pe"]}, "groups"),
    ],
)
def test_unsafe_names_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as info:
        Topics(**kwargs)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


@given(
    device=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True).filter(
        lambda d: d != "group"
    ),
    command=st.lists(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), min_size=1, max_size=3),
)
def test_round_trip_of_command_topics(device, command):
    t = Topics("edge", device, ["g1"])
    name = "/".join(command)
    for command_filter in t.command_filters():
        assert t.parse_command(command_filter[:-1] + name) == name
