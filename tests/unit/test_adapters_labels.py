"""Tier 1: label file parsing, count checks and lookups."""

import pytest

from edge_agent.errors import ModelError
from edge_agent.inference.labels import (
    label_count_warning,
    label_for,
    label_offset,
    parse_labels,
    read_labels,
)


def test_plain_one_per_line():
    assert parse_labels("background\ntench\ngoldfish\n") == {
        0: "background",
        1: "tench",
        2: "goldfish",
    }


def test_plain_keeps_na_gaps_and_commas():
    text = "person\nbicycle\nn/a\nstop sign\ntench, Tinca tinca\n"
    labels = parse_labels(text)
    assert labels[2] == "n/a"
    assert labels[3] == "stop sign"
    assert labels[4] == "tench, Tinca tinca"


def test_blank_lines_keep_their_index_and_trailing_ones_are_ignored():
    assert parse_labels("a\n\nc\n\n\n") == {0: "a", 2: "c"}


def test_bom_and_crlf():
    assert parse_labels("\ufeffcat\r\ndog\r\n\r\n") == {0: "cat", 1: "dog"}
    assert parse_labels("\ufeff0 cat\r\n1 dog\r\n") == {0: "cat", 1: "dog"}


@pytest.mark.parametrize(
    "text",
    [
        "0  person\n1  bicycle\n3  motorcycle\n",
        "0: person\n1: bicycle\n3: motorcycle\n",
        "0:person\n1:bicycle\n3:motorcycle\n",
        "  0 person  \n1\tbicycle\n\n3 :motorcycle\n",
        "0,person\n1,bicycle\n3, motorcycle\n",
        "id,name\n0,person\n1,bicycle\n3,motorcycle\n",  # a CSV header (TF Hub's AIY maps)
        "\ufeffindex,display_name\r\n0,person\r\n1,bicycle\r\n3,motorcycle\r\n",
    ],
)
def test_indexed_forms(text):
    assert parse_labels(text) == {0: "person", 1: "bicycle", 3: "motorcycle"}


def test_indexed_labels_keep_inner_spaces():
    assert parse_labels("0 traffic light\n1 fire hydrant") == {
        0: "traffic light",
        1: "fire hydrant",
    }


def test_a_plain_file_with_some_digit_labels_stays_plain():
    # Only the whole file being "N label" makes it indexed; otherwise line numbers rule.
    assert parse_labels("cat\n7 up can\ndog\n") == {0: "cat", 1: "7 up can", 2: "dog"}
    # A first line with a comma is a header only when every other line is "N,label".
    assert parse_labels("id,name\ncat\n1,dog\n") == {0: "id,name", 1: "cat", 2: "1,dog"}
    # A bare number is a label, not an index.
    assert parse_labels("0\n1\n2\n") == {0: "0", 1: "1", 2: "2"}


def test_duplicate_index_is_an_error_with_line_number():
    with pytest.raises(ModelError, match="line 3: label index 1 appears twice"):
        parse_labels("0 a\n1 b\n1 c\n")


def test_empty_text():
    assert parse_labels("") == {}
    assert parse_labels("\n\n  \n") == {}


def test_read_labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeff0 cat\r\n1 dog\r\n".encode())
    assert read_labels(path) == {0: "cat", 1: "dog"}


def test_read_labels_missing_file_names_it(tmp_path):
    path = tmp_path / "missing.txt"
    with pytest.raises(ModelError, match="missing.txt") as info:
        read_labels(path)
    assert isinstance(info.value.__cause__, OSError)


def test_read_labels_not_utf8_names_it(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ModelError, match="latin1.txt") as info:
        read_labels(path)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_read_labels_duplicate_names_file_and_line(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("0 a\n0 b\n")
    with pytest.raises(ModelError, match=r"dup.txt: line 2"):
        read_labels(path)


def plain(n, first=None):
    labels = {i: f"class{i}" for i in range(n)}
    if first is not None:
        labels[0] = first
    return labels


def test_count_matches():
    assert label_count_warning(plain(1001, "background"), 1001) is None
    assert label_count_warning(plain(80), 80) is None
    assert label_count_warning(plain(80), 0) is None  # class count unknown


def test_count_mismatch_warns_and_never_raises():
    warning = label_count_warning(plain(80), 1001)
    assert "80 entries" in warning and "1001 classes" in warning
    warning = label_count_warning(plain(90), 80)
    assert "90 entries" in warning and "80 classes" in warning
    assert "empty" in label_count_warning({}, 10)


def test_gaps_count_towards_the_size():
    labels = {0: "person", 89: "toothbrush"}
    assert label_count_warning(labels, 90) is None


def test_background_offsets():
    with_bg = plain(1001, "background")
    # Labels include background, the model (1000 outputs) does not: class k is label k+1.
    assert label_offset(with_bg, 1000) == 1
    assert label_count_warning(with_bg, 1000) is None
    assert "off by one" in label_count_warning(with_bg, 1000, background_offset_ok=False)
    assert label_for(with_bg, 0, label_offset(with_bg, 1000)) == "class1"
    # Model with a background output at 0, labels without it: class k is label k-1.
    without_bg = plain(1000)
    assert label_offset(without_bg, 1001) == -1
    assert label_count_warning(without_bg, 1001) is None
    assert label_for(without_bg, 1, -1) == "class0"
    assert label_for(without_bg, 0, -1) == "0"  # the background class has no label
    # One extra entry that is not a background placeholder is not explained.
    assert label_offset(plain(81), 80) == 0
    assert label_count_warning(plain(81), 80) is not None
    assert label_offset(plain(80), 80) == 0


def test_label_for_falls_back_to_the_id():
    labels = {0: "person", 2: "n/a"}
    assert label_for(labels, 0) == "person"
    assert label_for(labels, 2) == "n/a"
    assert label_for(labels, 1) == "1"
    assert label_for(labels, 500) == "500"
