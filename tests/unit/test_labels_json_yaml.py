"""Tier 1: label files written by other tools: JSON (a list, an index object, a Hugging
Face config's id2label, Ultralytics' metadata.json) and Ultralytics' metadata.yaml."""

from __future__ import annotations

import json

import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.labels import parse_labels, read_labels

# The head of what Ultralytics writes next to an export (yaml_save of its metadata).
ULTRALYTICS_YAML = """\
description: Ultralytics YOLOv8n model trained on coco.yaml
author: Ultralytics
date: '2024-03-01T10:00:00.000000'
version: 8.1.20
license: AGPL-3.0 License (https://ultralytics.com/license)
stride: 32
task: detect
batch: 1
imgsz:
- 640
- 640
names:
  0: person
  1: bicycle
  2: traffic light
  3: 'cell: phone'
args:
  int8: true
"""


def test_a_json_list_is_indexed_by_position():
    assert parse_labels('["person", "bicycle", "car"]') == {0: "person", 1: "bicycle", 2: "car"}


def test_a_json_list_keeps_an_empty_entry_as_a_gap():
    assert parse_labels('["background", "", "cat"]') == {0: "background", 2: "cat"}


def test_a_json_index_object_keeps_its_ids():
    assert parse_labels('{"1": "person", "2": "bicycle"}') == {1: "person", 2: "bicycle"}


def test_a_hugging_face_config_gives_its_id2label():
    config = {
        "architectures": ["MobileNetV2ForImageClassification"],
        "id2label": {"0": "background", "1": "tench, Tinca tinca"},
        "label2id": {"background": 0, "tench, Tinca tinca": 1},
        "image_size": 224,
    }
    assert parse_labels(json.dumps(config)) == {0: "background", 1: "tench, Tinca tinca"}


def test_ultralytics_metadata_json_gives_its_names():
    meta = {"task": "detect", "stride": 32, "names": {"0": "person", "1": "bicycle"}}
    assert parse_labels(json.dumps(meta)) == {0: "person", 1: "bicycle"}


@pytest.mark.parametrize(
    "text",
    [
        '{"model": "x"}',
        '{"0": 1}',
        '{"a": "person"}',
        "[1, 2]",
        '{"id2label": "none"}',
        '{"\u00b2": "squared"}',  # a digit to str.isdigit(), not to int()
        '{"-1": "minus"}',
    ],
)
def test_json_of_another_shape_is_refused_not_misread(text):
    with pytest.raises(ModelError, match="JSON label file"):
        parse_labels(text)


def test_a_plain_file_whose_first_label_starts_with_a_bracket_stays_plain():
    assert parse_labels("[unused]\nperson\n") == {0: "[unused]", 1: "person"}


def test_ultralytics_metadata_yaml_gives_its_names_block_only():
    assert parse_labels(ULTRALYTICS_YAML) == {
        0: "person",
        1: "bicycle",
        2: "traffic light",
        3: "cell: phone",
    }


def test_a_yaml_names_block_without_entries_is_refused():
    with pytest.raises(ModelError, match="names"):
        parse_labels("task: detect\nnames:\nargs:\n  int8: true\n")


def test_read_labels_names_the_json_file_it_refuses(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"id2label": "none"}')
    with pytest.raises(ModelError, match="config.json"):
        read_labels(path)


@pytest.mark.parametrize("text", ['{"0": "a", "0": "b"}', '{"0": "a", "00": "b"}'])
def test_an_index_given_twice_in_json_is_an_error_not_the_last_one_silently(text):
    with pytest.raises(ModelError, match="appears twice"):
        parse_labels(text)


def test_json_nested_too_deep_for_the_parser_is_read_as_plain_text():
    text = "[" * 100_000
    assert parse_labels(text) == {0: text}


def test_a_plain_file_with_a_line_names_colon_stays_a_plain_file():
    """Only a YAML file (top-level ``key:`` lines) has a names block: a plain label file
    one of whose labels is ``names:`` keeps every line as a label, as it always did."""
    text = "person\nnames:\ncar\n"
    assert parse_labels(text) == {0: "person", 1: "names:", 2: "car"}


def test_a_yaml_file_with_comments_and_blank_lines_still_gives_its_names():
    text = "# exported\n\ntask: detect\nnames:\n  # classes\n  0: person\n\n  1: car\n"
    assert parse_labels(text) == {0: "person", 1: "car"}


def test_a_yaml_file_may_start_with_a_document_marker():
    assert parse_labels("---\ntask: detect\nnames:\n  0: person\n") == {0: "person"}


@pytest.mark.parametrize(
    "text",
    [
        '{"' + "7" * 5000 + '": "x"}',  # JSON
        "7" * 5000 + " x\n",  # an indexed plain file
    ],
    ids=["json", "indexed"],
)
def test_an_index_too_long_for_int_is_a_model_error_not_a_value_error(text):
    with pytest.raises(ModelError, match="5000 digits"):
        parse_labels(text)


def test_a_yaml_index_longer_than_any_class_id_is_refused():
    with pytest.raises(ModelError, match="19 digits"):
        parse_labels("names:\n  " + "7" * 19 + ": x\n")


def test_a_yaml_name_that_is_no_string_is_refused():
    """PyYAML reads an unquoted yes or 12 as a bool or an int: such a name was never
    written by a YAML dumper, which quotes them."""
    with pytest.raises(ModelError, match="YAML label file"):
        parse_labels("task: detect\nnames:\n  0: yes\n")


@pytest.mark.parametrize(
    ("entry", "name"),
    [
        ("person  # a human", "person"),  # a comment after a plain name
        ("C# developer", "C# developer"),  # no space before '#': part of the name
        ("'''q'''", "'q'"),  # single quotes escape a quote by doubling it
        ("'it''s: here'  # quoted", "it's: here"),
        ('"a\\tb \\"c\\" \\x41\\u00e9"', 'a\tb "c" A\u00e9'),  # double quotes' escapes
        ("'a # b'", "a # b"),
        ("''", ""),
    ],
)
def test_a_yaml_name_is_read_as_yaml_reads_it(entry, name):
    assert parse_labels(f"task: detect\nnames:\n  0: {entry}\n  1: car\n") == {0: name, 1: "car"}


def test_a_long_yaml_name_folded_over_two_lines_is_read_whole():
    """PyYAML (Ultralytics' yaml_save) wraps a plain scalar longer than 80 columns."""
    text = (
        "task: detect\nnames:\n"
        "  0: word word word word word word word word word word word word word word word word\n"
        "    word end\n"
        "  1: car\n"
    )
    assert parse_labels(text) == {0: " ".join(["word"] * 17 + ["end"]), 1: "car"}


def test_a_quoted_yaml_name_folded_over_lines_is_read_whole():
    """PyYAML folds a long quoted scalar too: a line of it may start with '#' (no
    comment inside quotes), and a backslash at a line's end joins the next one."""
    text = "names:\n  0: 'tea''s\n    # not a comment'\n  1: \"ab\\\n    \\ cd\"\n  2: car\n"
    assert parse_labels(text) == {0: "tea's # not a comment", 1: "ab cd", 2: "car"}


def test_a_yaml_names_block_naming_an_index_twice_is_refused():
    with pytest.raises(ModelError, match="appears twice"):
        parse_labels("names:\n  0: person\n  0: car\n")
