"""TF Object Detection API label maps (label_map.pbtxt) and 1-based label files."""

import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.label_map_pbtxt import is_label_map, parse_label_map
from edge_agent.inference.labels import label_count_warning, label_for, label_offset, parse_labels

# The layouts seen in the wild: Open Images style (name is a MID, display_name the
# label), COCO style (name only), one-line items, comments, other fields.
OPEN_IMAGES = """# From tensorflow/models research/object_detection/data
item {
  name: "/m/01g317"
  id: 1
  display_name: "person"
}
item {
  name: "/m/0199g"  # a comment after a value
  id: 2
  display_name: "bicycle"
}
"""
COCO = 'item {\n  id: 1\n  name: "person"\n}\n\nitem { name: "bicycle" id: 2 }\n'


def test_display_name_wins_over_name():
    assert parse_labels(OPEN_IMAGES) == {1: "person", 2: "bicycle"}


def test_name_when_there_is_no_display_name():
    assert parse_labels(COCO) == {1: "person", 2: "bicycle"}


def test_bom_crlf_separators_single_quotes_escapes_and_other_fields_are_read():
    text = (
        "\ufeffitem <\r\n  id: 3; name: 'traffic light',\r\n"
        '  keypoints { id: 0 label: "nose" }\r\n  frequency: FREQUENT\r\n'
        '  ids: [1, 2]\r\n>\r\nitem: { id: 4 display_name: "caf\\303\\251" "\\"x\\"" }\r\n'
    )
    assert parse_labels(text) == {3: "traffic light", 4: 'café"x"'}


def test_only_a_file_opening_with_item_is_a_label_map():
    assert is_label_map("\n# comment\n  item {")
    assert is_label_map("item{")
    assert not is_label_map("item\nbackground\n")  # a plain file whose first label is item
    assert parse_labels("item\nperson\n") == {0: "item", 1: "person"}


@pytest.mark.parametrize(
    "text, message",
    [
        ('item { name: "a" }', "line 1: the item has no id"),
        ('item {\n id: -1 name: "a" }', "line 2: id must be an integer >= 0, got -1"),
        ('item {\n id: x name: "a" }', "line 2: id must be an integer >= 0, got x"),
        ("item { id: 1 }", "line 1: item 1 has no display_name or name"),
        ('item { id: 1 name: "a" }\nitem { id: 1 name: "b" }', "line 2: label id 1 appears"),
        ('item { id: 1 id: 2 name: "a" }', "line 1: id appears twice in one item"),
        ('item { id: 1 name: "a" }\nlabel { id: 2 }', "line 2: expected 'item {'"),
        ('item {\n id: 1\n name: "a', "line 3: an unterminated string"),
        ('item {\n id: 1\n name: "a"\n', "line 3: the file ends inside an item"),
        ('item { id 1 name: "a" }', "line 1: expected ':' after id"),
        ('item { id: 1 name: "\\377" }', "line 1: a string is not UTF-8"),
    ],
)
def test_malformed_label_maps_are_refused_with_the_line(text, message):
    with pytest.raises(ModelError, match=message):
        parse_label_map(text)


def test_one_based_ids_are_kept_and_meet_a_zero_based_model_by_the_offset_rule():
    # "1 person" means id 1 is person: kept as written, nothing at 0 ...
    one_based = parse_labels("1 person\n2 bicycle\n3 car\n")
    assert one_based == {1: "person", 2: "bicycle", 3: "car"}
    # ... and a model with one class fewer than the ids span (no background output,
    # the TF OD API convention: id 0 is the background) reads class k as id k + 1.
    assert label_offset(one_based, 3) == 1
    assert label_count_warning(one_based, 3) is None
    assert [label_for(one_based, k, 1) for k in range(3)] == ["person", "bicycle", "car"]
    # A model that does score the background at output 0 needs no shift.
    assert label_offset(one_based, 4) == 0
    assert label_for(one_based, 1) == "person"
    # The same for a label map.
    assert label_offset(parse_labels(OPEN_IMAGES), 2) == 1


def test_a_zero_based_file_is_not_shifted():
    zero_based = parse_labels("0 person\n1 bicycle\n2 car\n")
    assert label_offset(zero_based, 3) == 0
    # One entry too many with a real label at 0 is a mismatch, not a background.
    assert label_offset(zero_based, 2) == 0 and label_count_warning(zero_based, 2)
