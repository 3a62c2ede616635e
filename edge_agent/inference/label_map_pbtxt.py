"""TF Object Detection API label maps (``label_map.pbtxt``): protobuf text format.

::

    item {
      name: "/m/01g317"   # a comment
      id: 1
      display_name: "person"
    }

Each ``item`` gives its ``id`` and its label: ``display_name``, else ``name``. The ids
are kept as written (TF OD API ids start at 1, 0 being the background); aligning them
with a model's class outputs is :func:`edge_agent.inference.labels.label_offset`'s job,
as for any label file with explicit ids. Other fields (``keypoints { ... }``,
``frequency`` ...) are skipped. Anything that is not a well-formed list of items is
refused with the line it stops at, never half-read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from edge_agent.errors import ModelError

# A label map opens with an item (after blank lines and comments); nothing else does.
_OPENING = re.compile(r"\A(?:\s|#[^\n]*)*item\s*:?\s*[{<]")
_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>\#[^\n]*)
    |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<punct>[{}<>:;,\[\]])
    |(?P<word>[^\s{}<>:;,\[\]"'\#]+)""",
    re.VERBOSE,
)
_CLOSING = {"{": "}", "<": ">"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_LABEL_FIELDS = ("id", "name", "display_name")


class _Token(NamedTuple):
    kind: str  # "string", "punct" or "word"
    text: str
    line: int


def is_label_map(text: str) -> bool:
    """True when ``text`` is a pbtxt label map (its first statement is ``item {``)."""
    return _OPENING.match(text) is not None


def parse_label_map(text: str) -> dict[int, str]:
    """Parse a pbtxt label map.

    Args:
        text: the file's content.

    Returns:
        Item id -> ``display_name`` (else ``name``), ids as written.

    Raises:
        ModelError: malformed text, an item without an integer ``id`` >= 0 or without
            a name, or an id given twice; the message gives the line.
    """
    tokens = list(_tokens(text))
    labels: dict[int, str] = {}
    pos = 0
    while pos < len(tokens):
        start = tokens[pos]
        if start.text != "item":
            raise ModelError(f"line {start.line}: expected 'item {{', got {start.text!r}")
        fields, pos = _message(tokens, pos + 1)
        index, label = _item(fields, start.line)
        if index in labels:
            raise ModelError(f"line {start.line}: label id {index} appears twice")
        labels[index] = label
    return labels


def _tokens(text: str) -> Iterator[_Token]:
    """The tokens of protobuf text format, comments and spaces dropped."""
    pos, line = 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            what = "an unterminated string" if text[pos] in "\"'" else repr(text[pos])
            raise ModelError(f"line {line}: {what}")
        if match.lastgroup not in ("space", "comment"):
            yield _Token(match.lastgroup, match.group(), line)
        line += match.group().count("\n")
        pos = match.end()


def _take(tokens: list[_Token], pos: int, what: str) -> _Token:
    """The token at ``pos``, or a ModelError saying the file ended early."""
    if pos >= len(tokens):
        last = tokens[-1].line if tokens else 1
        raise ModelError(f"line {last}: the file ends inside an item (expected {what})")
    return tokens[pos]


def _message(tokens: list[_Token], pos: int) -> tuple[dict[str, _Token], int]:
    """Read ``[:] { field... }`` from ``pos``; returns the scalar fields and the position
    after the closing brace. Nested messages and lists are checked and skipped."""
    if _take(tokens, pos, "'{'").text == ":":
        pos += 1
    opening = _take(tokens, pos, "'{'")
    if opening.text not in _CLOSING:
        raise ModelError(f"line {opening.line}: expected '{{', got {opening.text!r}")
    closing, pos = _CLOSING[opening.text], pos + 1
    fields: dict[str, _Token] = {}
    while (token := _take(tokens, pos, f"'{closing}'")).text != closing:
        if token.kind != "word":
            raise ModelError(f"line {token.line}: expected a field name, got {token.text!r}")
        after = _take(tokens, pos + 1, "a value")
        if after.text in _CLOSING or (
            after.text == ":" and _take(tokens, pos + 2, "a value").text in _CLOSING
        ):
            _, pos = _message(tokens, pos + 1)
        else:
            if after.text != ":":
                raise ModelError(f"line {after.line}: expected ':' after {token.text}")
            value, pos = _scalar(tokens, pos + 2)
            if token.text in fields and token.text in _LABEL_FIELDS:
                raise ModelError(f"line {token.line}: {token.text} appears twice in one item")
            fields[token.text] = value
        if pos < len(tokens) and tokens[pos].text in ";,":
            pos += 1
    return fields, pos + 1


def _scalar(tokens: list[_Token], pos: int) -> tuple[_Token, int]:
    """A value: a word, adjacent strings (concatenated), or a ``[...]`` list (skipped)."""
    first = _take(tokens, pos, "a value")
    if first.text == "[":
        while _take(tokens, pos, "']'").text != "]":
            pos += 1
        return first, pos + 1
    if first.kind == "word":
        return first, pos + 1
    if first.kind != "string":
        raise ModelError(f"line {first.line}: expected a value, got {first.text!r}")
    parts = []
    while pos < len(tokens) and tokens[pos].kind == "string":
        parts.append(_unquote(tokens[pos]))
        pos += 1
    return _Token("string", "".join(parts), first.line), pos


def _unquote(token: _Token) -> str:
    """A quoted string's text: C escapes decoded, the bytes read as UTF-8."""
    out = bytearray()
    last = 0
    body = token.text[1:-1]
    for match in _ESCAPE.finditer(body):
        out += body[last : match.start()].encode("utf-8")
        code = match.group(1)
        if code[0] == "x":
            out.append(int(code[1:], 16))
        elif code[0] in "01234567":
            out.append(int(code, 8) & 0xFF)
        else:
            out += _SIMPLE_ESCAPES.get(code, code).encode("utf-8")
        last = match.end()
    out += body[last:].encode("utf-8")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"line {token.line}: a string is not UTF-8 ({exc.reason})") from exc


def _item(fields: dict[str, _Token], line: int) -> tuple[int, str]:
    """An item's id and label, checked."""
    if "id" not in fields:
        raise ModelError(f"line {line}: the item has no id")
    id_token = fields["id"]
    if id_token.kind != "word" or not re.fullmatch(r"\d+", id_token.text):
        raise ModelError(f"line {id_token.line}: id must be an integer >= 0, got {id_token.text}")
    names = [fields.get(key) for key in ("display_name", "name")]
    texts = [t.text.strip() for t in names if t is not None and t.kind == "string"]
    if not any(texts):
        raise ModelError(f"line {line}: item {id_token.text} has no display_name or name")
    return int(id_token.text), next(text for text in texts if text)
