"""The Native block writer: byte layout of each column kind, and concatenation."""

from __future__ import annotations

import numpy as np
import pytest

from sink.native import (
    Arrays,
    ColumnSpec,
    Dictionary,
    Maps,
    Nullable,
    Strings,
    concat,
    encode_block,
    row_count,
    varint,
)


def test_varint_is_unsigned_leb128() -> None:
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(128) == b"\x80\x01"
    assert varint(300) == b"\xac\x02"
    assert varint(2**32) == b"\x80\x80\x80\x80\x10"


def test_strings_are_length_prefixed_utf8() -> None:
    column = Strings.of(["CLX5", "", "é" * 70])
    assert column.rows == 3
    assert column.data.startswith(b"\x04CLX5\x00\x8c\x01")  # 140 bytes: two-byte varint
    assert column.to_list() == ["CLX5", "", "é" * 70]
    assert Strings.repeat("AB", 3) == Strings(b"\x02AB" * 3, 3)


def test_block_layout() -> None:
    specs = [
        ColumnSpec("x", "UInt16", np.dtype(np.uint16)),
        ColumnSpec("s", "String"),
        ColumnSpec("n", "Nullable(Int64)", np.dtype(np.int64)),
        ColumnSpec("a", "Array(UInt32)", np.dtype(np.uint32)),
        ColumnSpec("m", "Map(String, UInt64)", np.dtype(np.uint64)),
    ]
    block = encode_block(
        specs,
        {
            "x": np.array([1, 258], dtype=np.uint16),
            "s": Strings.of(["a", "bc"]),
            "n": Nullable(np.array([5, 0], dtype=np.int64), np.array([False, True])),
            "a": Arrays(np.array([0, 2], dtype=np.uint64), np.array([7, 8], dtype=np.uint32)),
            "m": Maps(
                np.array([1, 1], dtype=np.uint64), Strings.of(["k"]), np.array([9], np.uint64)
            ),
        },
    )
    expected = b"".join(
        [
            b"\x05\x02",  # 5 columns, 2 rows
            b"\x01x\x06UInt16", b"\x01\x00\x02\x01",
            b"\x01s\x06String", b"\x01a\x02bc",
            b"\x01n\x0fNullable(Int64)", b"\x00\x01", (5).to_bytes(8, "little"), bytes(8),
            b"\x01a\x0dArray(UInt32)", (0).to_bytes(8, "little"), (2).to_bytes(8, "little"),
            (7).to_bytes(4, "little"), (8).to_bytes(4, "little"),
            b"\x01m\x13Map(String, UInt64)", (1).to_bytes(8, "little"), (1).to_bytes(8, "little"),
            b"\x01k", (9).to_bytes(8, "little"),
        ]
    )  # fmt: skip
    assert block == expected


def test_dictionary_layout() -> None:
    column = Dictionary.repeated(["CLX5", "CLZ5", "CLX5"], np.array([2, 1, 1]))
    assert column.keys == ("CLX5", "CLZ5")
    assert column.indexes.tolist() == [0, 0, 1, 0]
    assert column.to_list() == ["CLX5", "CLX5", "CLZ5", "CLX5"]
    block = encode_block([ColumnSpec("s", "LowCardinality(String)")], {"s": column})
    u64 = [(v).to_bytes(8, "little") for v in (1, (1 << 9) | (1 << 10), 2, 4)]
    assert block == b"".join(
        [b"\x01\x04", b"\x01s\x16LowCardinality(String)", u64[0], u64[1], u64[2],
         b"\x04CLX5\x04CLZ5", u64[3], bytes([0, 0, 1, 0])]
    )  # fmt: skip
    wide = Dictionary.repeated([str(i) for i in range(256)], np.ones(256, dtype=np.int64))
    assert wide.indexes.dtype == np.uint16


def test_a_dictionary_goes_only_under_a_low_cardinality_type() -> None:
    column = Dictionary.repeated(["a"], np.array([1]))
    with pytest.raises(TypeError, match="String needs no Dictionary"):
        encode_block([ColumnSpec("s", "String")], {"s": column})
    with pytest.raises(TypeError, match=r"LowCardinality\(String\) needs a Dictionary"):
        encode_block([ColumnSpec("s", "LowCardinality(String)")], {"s": Strings.of(["a"])})


def test_dictionaries_concatenate_into_one() -> None:
    first = Dictionary.repeated(["a", "b"], np.array([1, 2]))
    second = Dictionary.repeated(["c", "a"], np.array([1, 1]))
    joined = concat([first, second])
    assert isinstance(joined, Dictionary)
    assert joined.keys == ("a", "b", "c")
    assert joined.to_list() == ["a", "b", "b", "c", "a"]


def test_block_refuses_wrong_dtype_length_and_missing_columns() -> None:
    spec = [ColumnSpec("x", "UInt32", np.dtype(np.uint32))]
    with pytest.raises(TypeError, match="int64, expected uint32"):
        encode_block(spec, {"x": np.array([1], dtype=np.int64)})
    with pytest.raises(KeyError, match="x"):
        encode_block(spec, {})
    two = [*spec, ColumnSpec("s", "String")]
    with pytest.raises(ValueError, match="differ in length"):
        encode_block(two, {"x": np.array([1], dtype=np.uint32), "s": Strings.of(["a", "b"])})


def test_concat_rebases_offsets() -> None:
    first = Arrays(np.array([2, 3], np.uint64), np.array([1, 2, 3], np.int64))
    second = Arrays(np.array([0, 1], np.uint64), np.array([4], np.int64))
    joined = concat([first, second])
    assert isinstance(joined, Arrays)
    assert joined.to_list() == [[1, 2], [3], [], [4]]
    assert row_count(joined) == 4

    maps = concat(
        [
            Maps(np.array([1], np.uint64), Strings.of(["a"]), np.array([1], np.uint64)),
            Maps(np.array([2], np.uint64), Strings.of(["a", "b"]), np.array([2, 3], np.uint64)),
        ]
    )
    assert isinstance(maps, Maps)
    assert maps.to_list() == [{"a": 1}, {"a": 2, "b": 3}]

    nullable = concat(
        [Nullable(np.array([1]), np.array([False])), Nullable(np.array([0]), np.array([True]))]
    )
    assert isinstance(nullable, Nullable)
    assert nullable.to_list() == [1, None]
    strings = concat([Strings.of(["a"]), Strings.of(["b", "c"])])
    assert isinstance(strings, Strings)
    assert strings.to_list() == ["a", "b", "c"]
