"""Reading a flatbuffer field by field, without generated bindings.

A flatbuffer table stores each field at a slot: its 0-based declaration order in the
``.fbs`` schema (a union takes two slots, its type tag then its value). These helpers
read one field of a ``flatbuffers.table.Table`` by slot, and give a default when the
field is absent, as generated code does.

Why not the generated bindings: TFLite's (``ai_edge_litert.schema_py_generated``) add
6 MB of resident memory to a process that imports them, and the metadata schema's ship
only in ``tflite-support``. A vector longer than the buffer, or of more tables than
:data:`MAX_TABLES`, raises :class:`CorruptFlatbuffer` at once, so a corrupt or hostile
file cannot make a reader walk or allocate billions of entries.
"""

from __future__ import annotations

from flatbuffers.number_types import (
    Float32Flags,
    Int32Flags,
    Int64Flags,
    Uint8Flags,
    Uint32Flags,
    Uint64Flags,
    UOffsetTFlags,
)
from flatbuffers.table import Table

from edge_agent.errors import ModelError

# More tables in one vector than any model edge-agent runs has operators or tensors
# (yolov8n: 231 operators); a hostile file's vector of millions would cost gigabytes.
MAX_TABLES = 100_000


class CorruptFlatbuffer(ModelError):
    """The bytes are not a well-formed flatbuffer of the expected schema."""


def root(data: bytes | bytearray) -> Table:
    """The root table of a flatbuffer."""
    if len(data) < 8:
        raise CorruptFlatbuffer(f"flatbuffer of {len(data)} bytes is too short")
    return Table(data, int.from_bytes(data[:4], "little"))


def field(table: Table, slot: int) -> int:
    """The absolute offset of a field's value, or 0 when the field is absent."""
    offset = table.Offset(4 + 2 * slot)
    return table.Pos + offset if offset else 0


def sub_table(table: Table, slot: int) -> Table | None:
    """A table-valued field (None when absent)."""
    pos = field(table, slot)
    return Table(table.Bytes, table.Indirect(pos)) if pos else None


def _vector(table: Table, slot: int, width: int) -> tuple[int, int]:
    """``(start, length)`` of a vector field whose elements are ``width`` bytes."""
    pos = field(table, slot)
    if not pos:
        return 0, 0
    start = table.Vector(pos - table.Pos)
    length = table.VectorLen(pos - table.Pos)
    if start + length * width > len(table.Bytes):
        raise CorruptFlatbuffer(f"vector of {length} entries runs past the end of the buffer")
    return start, length


def tables(table: Table, slot: int) -> list[Table]:
    """A vector-of-tables field (empty when absent)."""
    size = UOffsetTFlags.bytewidth
    start, length = _vector(table, slot, size)
    if length > MAX_TABLES:
        raise CorruptFlatbuffer(f"vector of {length} tables (at most {MAX_TABLES} are read)")
    return [Table(table.Bytes, table.Indirect(start + i * size)) for i in range(length)]


def table_at(table: Table, slot: int, index: int) -> Table:
    """Entry ``index`` of a vector-of-tables field.

    Raises:
        CorruptFlatbuffer: the vector is absent or shorter.
    """
    size = UOffsetTFlags.bytewidth
    start, length = _vector(table, slot, size)
    if not 0 <= index < length:
        raise CorruptFlatbuffer(f"index {index} outside a vector of {length} tables")
    return Table(table.Bytes, table.Indirect(start + index * size))


def _numbers(table: Table, slot: int, flags) -> tuple:
    """A vector-of-scalars field."""
    width = flags.bytewidth
    start, length = _vector(table, slot, width)
    return tuple(table.Get(flags, start + width * i) for i in range(length))


def floats(table: Table, slot: int) -> tuple[float, ...]:
    """A ``[float]`` field."""
    return tuple(float(v) for v in _numbers(table, slot, Float32Flags))


def ints(table: Table, slot: int) -> tuple[int, ...]:
    """An ``[int]`` field."""
    return tuple(int(v) for v in _numbers(table, slot, Int32Flags))


def longs(table: Table, slot: int) -> tuple[int, ...]:
    """A ``[long]`` field."""
    return tuple(int(v) for v in _numbers(table, slot, Int64Flags))


def ubytes(table: Table, slot: int) -> bytes:
    """A ``[ubyte]`` field's bytes (empty when absent)."""
    start, length = _vector(table, slot, 1)
    return bytes(table.Bytes[start : start + length])


def string(table: Table, slot: int) -> str | None:
    """A string field (None when absent)."""
    pos = field(table, slot)
    return table.String(pos).decode("utf-8", "replace") if pos else None


def byte(table: Table, slot: int, default: int = 0) -> int:
    """A ``ubyte``/``byte``-sized enum field."""
    pos = field(table, slot)
    return int(table.Get(Uint8Flags, pos)) if pos else default


def uint(table: Table, slot: int, default: int = 0) -> int:
    """A ``uint`` field."""
    pos = field(table, slot)
    return int(table.Get(Uint32Flags, pos)) if pos else default


def ulong(table: Table, slot: int, default: int = 0) -> int:
    """A ``ulong`` field."""
    pos = field(table, slot)
    return int(table.Get(Uint64Flags, pos)) if pos else default
