"""Label files: class index -> name.

Accepted layouts (decided for the whole file, so a label that happens to start with a
digit in a plain file does not shift the rest):

* plain, one label per line, index = line number (a blank line keeps its index
  unlabelled; trailing blank lines are ignored) - ``imagenet_labels.txt``,
  ``coco_labels.txt`` with ``n/a`` gaps (kept verbatim so ids stay aligned);
* indexed, every non-blank line ``N label``, ``N: label``, ``N:label`` or ``N,label``;
  the ids are kept as written, so a 1-based file (``1 person``, ``2 bicycle``...) has no
  entry 0. A CSV file's header line (``id,name``, as TF Hub's AIY label maps begin) is
  skipped when every other line is indexed;
* a TF Object Detection API label map (``label_map.pbtxt``, ``item { id: 1
  display_name: "person" }``; see :mod:`edge_agent.inference.label_map_pbtxt`), ids as
  written (1-based, 0 being the background);
* JSON: a list of names (index = position), an ``{"0": "person", ...}`` object, or an
  object holding either under ``id2label`` (a Hugging Face ``config.json``), ``names``
  (Ultralytics' ``metadata.json``) or ``labels``;
* Ultralytics' export ``metadata.yaml``: its ``names`` mapping (``  0: person``), read
  with PyYAML's safe loader, the rest of the file ignored.

A UTF-8 BOM and CRLF line ends are accepted. How the file's ids meet the model's class
ids (a background entry at 0, or no entry 0 at all) is :func:`label_offset`'s rule.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from edge_agent.errors import ModelError
from edge_agent.fileguard import check_regular
from edge_agent.inference.label_map_pbtxt import is_label_map, parse_label_map

_INDEXED = re.compile(r"^\s*(\d+)\s*(?::\s*|,\s*|\s+)(\S.*?)\s*$")
_CSV_HEADER = re.compile(r"^\s*[A-Za-z_][\w ]*,")  # "id,name", "index,display_name"
_YAML_NAMES = re.compile(r"^names:", re.MULTILINE)  # Ultralytics' metadata.yaml
_JSON_KEYS = ("id2label", "names", "labels")  # where a JSON file may hold its labels
_INDEX = re.compile(r"\s*[0-9]+\s*\Z")  # ASCII digits only: int() takes others too
_MAX_INDEX_DIGITS = 18  # no class id is longer (int() refuses over 4300 digits)
# Names a label file uses for "no class here" at index 0.
_BACKGROUND = {"background", "__background__", "???", "n/a", "unlabeled", "unlabelled"}


def parse_labels(text: str) -> dict[int, str]:
    """Parse the text of a label file.

    Args:
        text: the file's content.

    Returns:
        Class index -> label, without entries for blank lines.

    Raises:
        ModelError: an indexed file or label map lists the same index twice, or a label
            map is malformed (the message gives the line number).
    """
    text = text.lstrip("\ufeff")
    if is_label_map(text):
        return parse_label_map(text)
    if text.lstrip()[:1] in ("[", "{"):
        try:
            doc = json.loads(text, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            raise ModelError(f"label index {exc} appears twice") from None
        except (ValueError, RecursionError):
            doc = None  # a plain file whose first label starts with a bracket
        if doc is not None:
            return _json_labels(doc)
    if _YAML_NAMES.search(text) is not None and (doc := _yaml_mapping(text)) is not None:
        return _indexed_names(doc["names"], "the names of a YAML label file")
    lines = text.splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        return {}
    matches = [(n, _INDEXED.match(line)) for n, line in numbered]
    header = len(matches) > 1 and matches[0][1] is None and _CSV_HEADER.match(numbered[0][1])
    if header and all(match is not None for _, match in matches[1:]):
        matches = matches[1:]  # a CSV header, not a label
    if all(match is not None for _, match in matches):
        labels: dict[int, str] = {}
        for n, match in matches:
            index = _index(match.group(1))
            if index in labels:
                raise ModelError(f"line {n}: label index {index} appears twice")
            labels[index] = match.group(2)
        return labels
    return {n - 1: line.strip() for n, line in numbered}


class _DuplicateKey(ValueError):
    """A JSON object names one key twice (json keeps the last one silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _json_labels(doc: Any) -> dict[int, str]:
    """The labels of a parsed JSON label file (see the module docstring)."""
    if isinstance(doc, dict):
        inner = next((doc[k] for k in _JSON_KEYS if isinstance(doc.get(k), (dict, list))), None)
        doc = inner if inner is not None else doc
    return _indexed_names(doc, "a JSON label file")


def _indexed_names(doc: Any, what: str) -> dict[int, str]:
    """Index -> name from a list of names (index = position; an empty or null entry
    keeps its index unlabelled) or a mapping of indexes (ints, or ASCII digits) to names.

    Raises:
        ModelError: ``doc`` is neither, or names an index twice.
    """
    if isinstance(doc, list):
        doc = {i: name for i, name in enumerate(doc) if name not in (None, "")}
    if not isinstance(doc, dict) or not all(
        ((isinstance(k, str) and _INDEX.match(k)) or (type(k) is int and k >= 0))
        and isinstance(v, str)
        for k, v in doc.items()
    ):
        raise ModelError(
            f"{what} must be a list of names or an {{index: name}} mapping"
            + (f", or hold one under {', '.join(_JSON_KEYS)}" if "JSON" in what else "")
        )
    labels: dict[int, str] = {}
    for key, name in doc.items():
        index = _index(str(key))
        if index in labels:
            raise ModelError(f"label index {index} appears twice")
        labels[index] = name
    return labels


def _index(digits: str) -> int:
    """The class index written as ``digits``.

    Raises:
        ModelError: it has more digits than any class id.
    """
    digits = digits.strip()
    if len(digits) > _MAX_INDEX_DIGITS:
        raise ModelError(f"label index {digits[:12]}... ({len(digits)} digits) is too large")
    return int(digits)


def _yaml_mapping(text: str) -> dict[Any, Any] | None:
    """The YAML mapping with a ``names`` key the text is (Ultralytics' ``metadata.yaml``),
    or None when it is no such YAML (a plain label file with a ``names:`` line).

    Raises:
        ModelError: a mapping gives a key twice (PyYAML would keep the last silently), or
            an integer is too long for Python.
    """
    import yaml  # only for such a file: the daemon never loads it otherwise

    class UniqueKeys(yaml.SafeLoader):
        """The safe loader, refusing a mapping key given twice."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(key, deep=True) for key, _ in node.value]
        twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if twice is not None:
            raise ModelError(f"label index {twice} appears twice")
        return loader.construct_mapping(node, deep=True)

    UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        doc = yaml.load(text, Loader=UniqueKeys)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, RecursionError, TypeError):
        return None  # TypeError: an unhashable key
    except ValueError as exc:  # an integer over Python's 4300 digits
        raise ModelError(f"its YAML cannot be read: {exc}") from exc
    return doc if isinstance(doc, dict) and "names" in doc else None


def read_labels(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read and parse a label file (see :func:`parse_labels`).

    Args:
        path: the label file.

    Returns:
        Class index -> label.

    Raises:
        ModelError: the file cannot be read, is not UTF-8, or repeats an index; the
            message names the file.
    """
    try:
        check_regular(path)  # a FIFO or a device is never a label file
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read label file {os.fspath(path)}: {e}") from e
    try:
        return parse_labels(text)
    except ModelError as e:
        raise ModelError(f"label file {os.fspath(path)}: {e}") from e


def _is_background(label: str | None) -> bool:
    """Whether entry 0 of a file stands for "no class": absent, or a placeholder name."""
    return label is None or label.strip().lower() in _BACKGROUND


def _size(labels: dict[int, str]) -> int:
    """Entries a label file spans: ``max index + 1`` (gaps count)."""
    return max(labels) + 1 if labels else 0


def label_offset(labels: dict[int, str], num_classes: int) -> int:
    """The shift that aligns a model's class ids with a label file off by a background.

    * ``+1``: the file has one entry more than the model has classes and entry 0 is a
      background placeholder ("background", "???", "n/a", ...) or absent (a 1-based
      ``1 person`` file or a TF OD API label map, whose id 0 is the background): the
      model has no background output, so class ``k`` is label ``k + 1``.
    * ``-1``: the file has one entry fewer: the model scores a background class at
      output 0 (TF-slim style 1001-class models) that the file leaves out, so class
      ``k`` is label ``k - 1`` (class 0 has no label).
    * ``0`` otherwise.

    Args:
        labels: the parsed labels.
        num_classes: how many classes the model scores (``<= 0``: unknown).

    Returns:
        0, 1 or -1, to pass to :func:`label_for`.
    """
    size = _size(labels)
    if num_classes <= 0 or not labels:
        return 0
    if size == num_classes + 1 and _is_background(labels.get(0)):
        return 1
    if size == num_classes - 1:
        return -1
    return 0


def label_count_warning(
    labels: dict[int, str], num_classes: int, *, background_offset_ok: bool = True
) -> str | None:
    """Say whether a label file plausibly belongs to a model with ``num_classes`` outputs.

    The file's size is ``max index + 1`` (gaps count). A size equal to the number of
    classes is fine (``imagenet_labels.txt``: 1001 entries including background, for
    1001 outputs). With ``background_offset_ok`` the two background off-by-ones that
    :func:`label_offset` aligns are fine too (the caller then passes that offset to
    :func:`label_for`); without it they are reported.

    Args:
        labels: the parsed labels.
        num_classes: how many classes the model scores (``<= 0``: unknown, no check).
        background_offset_ok: whether the caller applies :func:`label_offset`.

    Returns:
        None when the sizes fit, else a one-line warning for the caller to log.
    """
    if num_classes <= 0:
        return None
    size = _size(labels)
    if size == num_classes:
        return None
    if not labels:
        return f"the label file is empty but the model has {num_classes} classes"
    offset = label_offset(labels, num_classes)
    if offset and background_offset_ok:
        return None
    if offset:
        return (
            f"the label file has {size} entries for {num_classes} classes: class ids "
            f"would be off by one (a background entry on one side only)"
        )
    if size < num_classes:
        return (
            f"the label file has {size} entries but the model has {num_classes} classes: "
            f"ids {size}..{num_classes - 1} have no label; wrong label file?"
        )
    return (
        f"the label file has {size} entries but the model has only {num_classes} classes: "
        "wrong label file?"
    )


def label_for(labels: dict[int, str], class_id: int, offset: int = 0) -> str:
    """The label of a class id, or the id itself as text when the file has none.

    Args:
        labels: the parsed labels.
        class_id: the model's class id.
        offset: from :func:`label_offset` (0 when the file and model align).

    Returns:
        ``labels[class_id + offset]`` or ``str(class_id)``.
    """
    return labels.get(class_id + offset, str(class_id))
