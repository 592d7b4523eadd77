"""ClickHouse's Native format, written straight from numpy columns.

Why: Native is ClickHouse's own columnar block layout, so a fixed-width column is the raw bytes
of a numpy array and the engine parses an insert with no per-row work. Measured into chDB with
the mbo_records table (1M CLX5 records, 200k-row inserts, 2 cores): ~0.65-1.2M rows/s, against
~0.2M rows/s through Arrow (`insert_arrow`) and ~0.3-0.4M rows/s for RowBinary from a packed
numpy structured array (see bench/sink.py and docs/storage.md). clickhouse-connect's own
`insert()` converts DateTime64 values one Python object at a time.

A block is: varint column count, varint row count, then per column its name, its type and its
data. Data layouts used here (ClickHouse `Serialization*` classes):

* fixed-width (Int*/UInt*, Bool as UInt8, DateTime64 as Int64 ticks, Enum8 as Int8): the values;
* String: per row a varint byte length and the UTF-8 bytes;
* Nullable(T): one UInt8 per row (1 = NULL), then the T column (any value under a NULL);
* Array(T): UInt64 cumulative end offsets, one per row, then the flattened T column;
* Map(K, V): as Array(Tuple(K, V)): offsets, then the K column, then the V column;
* LowCardinality(String): a UInt64 serialization version (1), then UInt64 flags (the index
  width, with "additional keys" and "update dictionary" set: the block carries its own
  dictionary), the UInt64 key count, the keys as a String column, the UInt64 row count and one
  index per row into the keys (UInt8/16/32 by the key count).

The type named in a block may differ from the table's: the server converts (e.g. Int8 codes
into Enum8 - without checking the code). The same bytes go to chDB and to a server over HTTP
(`client.raw_insert(..., fmt="Native")`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np


def varint(value: int) -> bytes:
    """Unsigned LEB128, as Native uses for counts and string lengths."""
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


@dataclass(frozen=True, slots=True)
class Strings:
    """A String column already in Native layout (length-prefixed UTF-8 values)."""

    data: bytes
    rows: int

    @staticmethod
    def encode_one(text: str) -> bytes:
        raw = text.encode()
        return varint(len(raw)) + raw

    @classmethod
    def repeat(cls, text: str, rows: int) -> Strings:
        # bytes * n: the common case (one symbol for a whole message) costs one memset-like copy.
        return cls(cls.encode_one(text) * rows, rows)

    @classmethod
    def of(cls, texts: Iterable[str]) -> Strings:
        encoded = [cls.encode_one(text) for text in texts]
        return cls(b"".join(encoded), len(encoded))

    def to_list(self) -> list[str]:
        values: list[str] = []
        pos = 0
        while pos < len(self.data):
            length, pos = _read_varint(self.data, pos)
            values.append(self.data[pos : pos + length].decode())
            pos += length
        return values


@dataclass(frozen=True, slots=True)
class Nullable:
    """Nullable(T): values (anything under a NULL) and a boolean null mask."""

    values: np.ndarray
    null: np.ndarray

    def to_list(self) -> list[object]:
        pairs = zip(self.values.tolist(), self.null.tolist(), strict=True)
        return [None if missing else value for value, missing in pairs]


@dataclass(frozen=True, slots=True)
class Arrays:
    """Array(T): cumulative end offsets (uint64, one per row) over the flattened values."""

    offsets: np.ndarray
    values: np.ndarray

    def to_list(self) -> list[list[object]]:
        flat = self.values.tolist()
        starts = [0, *self.offsets.tolist()]
        return [flat[starts[i] : starts[i + 1]] for i in range(len(self.offsets))]


@dataclass(frozen=True, slots=True)
class Maps:
    """Map(String, V): cumulative end offsets per row over parallel keys and values."""

    offsets: np.ndarray
    keys: Strings
    values: np.ndarray

    def to_list(self) -> list[dict[str, object]]:
        keys = self.keys.to_list()
        flat = self.values.tolist()
        starts = [0, *self.offsets.tolist()]
        return [
            dict(zip(keys[starts[i] : starts[i + 1]], flat[starts[i] : starts[i + 1]], strict=True))
            for i in range(len(self.offsets))
        ]


@dataclass(frozen=True, slots=True)
class Dictionary:
    """LowCardinality(String): the distinct values and one index per row into them.

    Why: a String column sent for a LowCardinality one makes the engine hash every row's value
    to build the dictionary itself; the sink's symbol and replay_id columns hold one value per
    message, so the dictionary is known up front. Measured into chDB on 2M raw records: leaving
    both columns out saved ~0.3 of the insert's ~1.9 CPU-s; sending them as dictionaries instead
    of Strings saved ~0.1."""

    keys: tuple[str, ...]
    indexes: np.ndarray  # uint8, uint16 or uint32 (by the number of keys)

    @classmethod
    def repeated(cls, texts: Sequence[str], counts: np.ndarray) -> Dictionary:
        """texts[i] repeated counts[i] times (one per message's rows)."""
        keys: dict[str, int] = {}
        codes = [keys.setdefault(text, len(keys)) for text in texts]
        dtype = _index_dtype(len(keys))
        return cls(tuple(keys), np.repeat(np.array(codes, dtype=dtype), counts))

    def to_list(self) -> list[str]:
        return [self.keys[i] for i in self.indexes.tolist()]


def _index_dtype(keys: int) -> np.dtype:
    if keys <= 0xFF:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if keys <= 0xFFFF else np.dtype(np.uint32)


#: SerializationLowCardinality: the index width in the low byte (0 = UInt8 ... 2 = UInt32),
#: HasAdditionalKeysBit (1 << 9) and NeedUpdateDictionary (1 << 10).
_LC_VERSION = 1
_LC_WIDTH = {1: 0, 2: 1, 4: 2}
_LC_OWN_KEYS = (1 << 9) | (1 << 10)


def _dictionary_bytes(column: Dictionary) -> bytes:
    rows = len(column.indexes)
    if rows == 0:
        return b""  # the engine reads no column data at all in a block of no rows
    prefix = _LC_VERSION.to_bytes(8, "little")
    indexes = np.ascontiguousarray(column.indexes)
    width = _LC_WIDTH[indexes.dtype.itemsize]
    keys = b"".join(Strings.encode_one(key) for key in column.keys)
    return b"".join(
        [
            prefix,
            (_LC_OWN_KEYS | width).to_bytes(8, "little"),
            len(column.keys).to_bytes(8, "little"),
            keys,
            rows.to_bytes(8, "little"),
            indexes.tobytes(),
        ]
    )


Column: TypeAlias = np.ndarray | Strings | Nullable | Arrays | Maps | Dictionary


def row_count(column: Column) -> int:
    if isinstance(column, Strings):
        return column.rows
    if isinstance(column, Nullable):
        return len(column.values)
    if isinstance(column, Arrays | Maps):
        return len(column.offsets)
    if isinstance(column, Dictionary):
        return len(column.indexes)
    return len(column)


def _concat_offsets(parts: Sequence[np.ndarray]) -> np.ndarray:
    # Each part's offsets count from 0; shift them by the values of the parts before it.
    shifted = []
    base = 0
    for offsets in parts:
        shifted.append(offsets.astype(np.uint64, copy=False) + np.uint64(base))
        if len(offsets):
            base += int(offsets[-1])
    return np.concatenate(shifted) if shifted else np.zeros(0, np.uint64)


def concat(parts: Sequence[Column]) -> Column:
    """One column from same-kind parts, in order (the rows of several messages)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, Strings):
        strings = [part for part in parts if isinstance(part, Strings)]
        return Strings(b"".join(s.data for s in strings), sum(s.rows for s in strings))
    if isinstance(first, Nullable):
        nullables = [part for part in parts if isinstance(part, Nullable)]
        return Nullable(
            np.concatenate([n.values for n in nullables]),
            np.concatenate([n.null for n in nullables]),
        )
    if isinstance(first, Arrays):
        arrays = [part for part in parts if isinstance(part, Arrays)]
        return Arrays(
            _concat_offsets([a.offsets for a in arrays]),
            np.concatenate([a.values for a in arrays]),
        )
    if isinstance(first, Dictionary):
        dictionaries = [part for part in parts if isinstance(part, Dictionary)]
        keys: dict[str, int] = {}
        remapped = []
        for d in dictionaries:
            # Each part's keys get their index in the joined dictionary; its rows follow.
            mapping = np.array([keys.setdefault(k, len(keys)) for k in d.keys], dtype=np.uint32)
            remapped.append(mapping[d.indexes] if len(d.indexes) else np.zeros(0, np.uint32))
        indexes = np.concatenate(remapped).astype(_index_dtype(len(keys)))
        return Dictionary(tuple(keys), indexes)
    if isinstance(first, Maps):
        maps = [part for part in parts if isinstance(part, Maps)]
        return Maps(
            _concat_offsets([m.offsets for m in maps]),
            Strings(b"".join(m.keys.data for m in maps), sum(m.keys.rows for m in maps)),
            np.concatenate([m.values for m in maps]),
        )
    return np.concatenate([part for part in parts if isinstance(part, np.ndarray)])


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """A column as sent: its name, the Native type named in the block and the numpy dtype of
    its fixed-width values (the element type for Nullable, Array and Map values)."""

    name: str
    native_type: str
    dtype: np.dtype | None = None  # None: String


def _fixed(name: str, values: np.ndarray, dtype: np.dtype) -> bytes:
    if values.dtype != dtype:
        # Decoders build exact dtypes; a mismatch is a bug, never something to cast silently.
        raise TypeError(f"column {name}: numpy {values.dtype}, expected {dtype}")
    return np.ascontiguousarray(values).tobytes()


def _column_bytes(spec: ColumnSpec, column: Column) -> bytes:
    dtype = spec.dtype
    low_cardinality = spec.native_type.startswith("LowCardinality(")
    if isinstance(column, Dictionary) != low_cardinality:
        # Either layout under the other's type name would be a malformed block.
        kind = "a Dictionary" if low_cardinality else "no Dictionary"
        raise TypeError(f"column {spec.name}: {spec.native_type} needs {kind}")
    if isinstance(column, Strings):
        return column.data
    if isinstance(column, Dictionary):
        return _dictionary_bytes(column)
    if dtype is None:
        raise TypeError(f"column {spec.name}: {spec.native_type} needs Strings")
    if isinstance(column, Nullable):
        null = np.ascontiguousarray(column.null, dtype=np.uint8).tobytes()
        return null + _fixed(spec.name, column.values, dtype)
    if isinstance(column, Arrays):
        offsets = _fixed(spec.name, column.offsets, np.dtype(np.uint64))
        return offsets + _fixed(spec.name, column.values, dtype)
    if isinstance(column, Maps):
        offsets = _fixed(spec.name, column.offsets, np.dtype(np.uint64))
        return offsets + column.keys.data + _fixed(spec.name, column.values, dtype)
    return _fixed(spec.name, column, dtype)


def encode_block(specs: Sequence[ColumnSpec], columns: dict[str, Column]) -> bytes:
    """One Native block of `columns` in the order of `specs`; every column must be present and
    all must have the same row count."""
    missing = [spec.name for spec in specs if spec.name not in columns]
    if missing:
        raise KeyError(f"columns missing from the block: {missing}")
    counts = {spec.name: row_count(columns[spec.name]) for spec in specs}
    rows = next(iter(counts.values()), 0)
    if any(count != rows for count in counts.values()):
        raise ValueError(f"columns differ in length: {counts}")
    parts = [varint(len(specs)), varint(rows)]
    for spec in specs:
        parts.append(Strings.encode_one(spec.name))
        parts.append(Strings.encode_one(spec.native_type))
        parts.append(_column_bytes(spec, columns[spec.name]))
    return b"".join(parts)
