"""Tier 1: ``model.labels_filter`` entries no result can carry are config warnings."""

from __future__ import annotations

import numpy as np

from edge_agent.config.checks import did_you_mean
from edge_agent.daemon.preflight import label_names, labels_filter_warnings
from edge_agent.inference.postprocess import Decoder
from edge_agent.inference.tensors import NOT_QUANTIZED, TensorSpec

COCO = frozenset({"person", "bicycle", "car", "dog"})


def classifier(classes: int, labels: dict[int, str]) -> Decoder:
    scores = TensorSpec(0, "scores", (1, classes), np.dtype(np.float32), NOT_QUANTIZED)
    return Decoder([scores], (32, 32), labels=labels)


def test_a_typo_is_named_with_the_file_the_key_and_a_suggestion() -> None:
    warnings = labels_filter_warnings("c.toml", ["persn", "dog"], COCO, "labels from /l.txt")
    assert warnings == [
        'c.toml: model.labels_filter: "persn" is not a label of the model (labels from '
        '/l.txt), so it keeps nothing; did you mean "person"?'
    ]


def test_known_entries_and_no_filter_give_no_warning() -> None:
    assert labels_filter_warnings("c.toml", ["person", "car"], COCO, "labels from /l.txt") == []
    assert labels_filter_warnings("c.toml", [], COCO, "labels from /l.txt") == []


def test_an_entry_far_from_every_label_gets_no_suggestion() -> None:
    (warning,) = labels_filter_warnings("", ["zebra"], COCO, "labels from its metadata")
    assert warning == (
        'model.labels_filter: "zebra" is not a label of the model (labels from its '
        "metadata), so it keeps nothing"
    )


def test_a_model_without_labels_is_named_by_class_id() -> None:
    names = frozenset(str(i) for i in range(3))
    assert labels_filter_warnings("c.toml", ["2"], names, "") == []
    (warning,) = labels_filter_warnings("c.toml", ["person"], names, "")
    assert warning == (
        'c.toml: model.labels_filter: "person" is not a label of the model: it has no '
        "labels and its results are named by class id; set model.labels"
    )


def test_open_ended_class_ids_pass() -> None:
    # An SSD model that does not say how many classes it has may give any class id.
    assert labels_filter_warnings("c.toml", ["17"], COCO, "labels from /l.txt", True) == []
    assert len(labels_filter_warnings("c.toml", ["17"], COCO, "labels from /l.txt")) == 1


def test_label_names_are_what_the_decoder_gives() -> None:
    assert label_names(classifier(3, {0: "red", 1: "green", 2: "blue"})) == (
        frozenset({"red", "green", "blue"}),
        False,
    )
    # Two labels for five classes: classes 2..4 are named by their id.
    assert label_names(classifier(5, {0: "red", 1: "green"}))[0] == {"red", "green", "2", "3", "4"}
    # One entry too few: the model scores a background at 0 that the file leaves out.
    shifted = classifier(4, {0: "red", 1: "green", 2: "blue"})
    assert shifted.label_offset == -1
    assert label_names(shifted)[0] == {"0", "red", "green", "blue"}
    assert label_names(classifier(2, {}))[0] == {"0", "1"}


def test_did_you_mean_is_the_config_keys_helper() -> None:
    assert did_you_mean("persn", COCO) == '; did you mean "person"?'
    assert did_you_mean("zebra", COCO) == ""
