"""Decoding Kafka messages into table columns (pure): each topic kind, per mbo_core/wire/."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mbo_core.prices import UNDEF_PRICE
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.records import MBO_DTYPE, MBO_LENGTH_WORDS, RTYPE_MBO
from mbo_core.wire import (
    Encoded,
    MalformedMessage,
    decode_bbo,
    decode_snapshots,
    end_of_stream_headers,
    records_headers,
)
from mbo_core.wire.layouts import LEVEL_SIZE_MAX
from sink.decode import (
    EventRows,
    Kind,
    RecordChunk,
    decode_message,
    event_columns,
    record_columns,
)
from sink.native import Arrays, Dictionary, Nullable, Strings
from tests.sink.wire import (
    CENT,
    CLX5_INSTRUMENT,
    Sent,
    bbo_fields,
    bbo_message,
    bbo_quality,
    clx5_records,
    event_chunks,
    last_flags,
    snapshot_fields,
    snapshot_message,
    snapshot_quality,
)


def _headers(records: np.ndarray, symbol: str | None = "CLX5") -> list[tuple[str, bytes]]:
    return records_headers(dataset="GLBX.MDP3", symbol=symbol, sent_ns=123, records=len(records))


def _records_message(records: np.ndarray, partition: int = 3, offset: int = 41) -> RecordChunk:
    decoded = decode_message(Kind.RECORDS, partition, offset, records.tobytes(), _headers(records))
    assert isinstance(decoded, RecordChunk)
    return decoded


def _list(column: object) -> list[Any]:
    if isinstance(column, np.ndarray):
        values: list[Any] = column.tolist()
        return values
    assert isinstance(column, Strings | Nullable | Arrays | Dictionary)
    return column.to_list()


def test_a_records_message_gives_one_row_per_record() -> None:
    chunk = event_chunks(clx5_records(), 500)[1]
    decoded = _records_message(chunk)
    assert (decoded.partition, decoded.offset, decoded.symbol, decoded.sent_ns) == (
        3,
        41,
        "CLX5",
        123,
    )
    assert decoded.rows == len(chunk)
    columns = decoded.columns()
    n = len(chunk)
    fields = ["ts_event", "ts_recv", "price", "order_id", "size", "flags", "sequence"]
    fields += ["ts_in_delta", "publisher_id", "instrument_id", "channel_id", "action", "side"]
    for field in fields:
        assert _list(columns[field]) == chunk[field].tolist(), field
    assert _list(columns["symbol"]) == ["CLX5"] * n
    assert _list(columns["replay_id"]) == [""] * n  # no replay id header: the empty run
    assert _list(columns["replay_copy"]) == [0] * n
    assert _list(columns["source_partition"]) == [3] * n
    assert _list(columns["source_offset"]) == [41] * n
    assert _list(columns["record_index"]) == list(range(n))
    # Wire types: DateTime64(9) as Int64 ns, Enum8 as Int8 codes.
    assert isinstance(columns["ts_event"], np.ndarray)
    assert columns["ts_event"].dtype == np.int64
    assert isinstance(columns["action"], np.ndarray)
    assert columns["action"].dtype == np.int8
    assert set(_list(columns["action"])) <= set(b"ACFMNRT")


def test_records_rows_carry_the_run_of_their_message() -> None:
    first, second = event_chunks(clx5_records(), 300)[:2]
    chunks = []
    for offset, (records, copy) in enumerate([(first, 1), (second, 2)]):
        headers = records_headers(
            dataset="GLBX.MDP3", symbol="CLX5", sent_ns=1, records=len(records), replay_id="r",
            replay_copy=copy,
        )  # fmt: skip
        chunk = decode_message(Kind.RECORDS, 0, offset, records.tobytes(), headers)
        assert isinstance(chunk, RecordChunk)
        chunks.append(chunk)
    columns = record_columns(chunks)
    assert _list(columns["replay_id"]) == ["r"] * (len(first) + len(second))
    assert _list(columns["replay_copy"]) == [1] * len(first) + [2] * len(second)


def test_record_index_restarts_in_each_message_of_a_batch() -> None:
    first, second = event_chunks(clx5_records(), 300)[:2]
    columns = record_columns([_records_message(first, 0, 7), _records_message(second, 0, 8)])
    assert _list(columns["record_index"]) == [*range(len(first)), *range(len(second))]
    assert _list(columns["source_offset"]) == [7] * len(first) + [8] * len(second)
    assert _list(columns["price"]) == np.concatenate([first, second])["price"].tolist()


def test_end_of_stream_and_empty_messages_have_no_rows() -> None:
    marker = end_of_stream_headers(dataset="GLBX.MDP3", symbol="CLX5", sent_ns=5)
    assert decode_message(Kind.RECORDS, 0, 9, b"", marker) is None
    assert decode_message(Kind.RECORDS, 0, 9, None, None) is None


def test_a_record_without_symbol_header_stores_an_empty_symbol() -> None:
    chunk = clx5_records()[:3]
    decoded = decode_message(Kind.RECORDS, 0, 1, chunk.tobytes(), _headers(chunk, None))
    assert isinstance(decoded, RecordChunk)
    assert _list(decoded.columns()["symbol"]) == ["", "", ""]


def test_malformed_records_messages_are_refused() -> None:
    chunk = clx5_records()[:4].copy()
    with pytest.raises(MalformedMessage, match="not whole 56-byte"):
        decode_message(Kind.RECORDS, 0, 1, chunk.tobytes()[:-1], _headers(chunk))
    with pytest.raises(MalformedMessage, match="records=4 but 3"):
        decode_message(Kind.RECORDS, 0, 1, chunk[:3].tobytes(), _headers(chunk))
    with pytest.raises(MalformedMessage, match="not a records message"):
        decode_message(Kind.RECORDS, 0, 1, chunk.tobytes(), [("mbo-schema", b"other")])
    chunk["action"][2] = ord("X")
    with pytest.raises(MalformedMessage, match=r"record 2: action b'X'"):
        decode_message(Kind.RECORDS, 0, 1, chunk.tobytes(), _headers(chunk))
    chunk["action"][2] = ord("A")
    chunk["side"][0] = 0
    with pytest.raises(MalformedMessage, match="record 0: side"):
        decode_message(Kind.RECORDS, 0, 1, chunk.tobytes(), _headers(chunk))


def _sent(offset: int = 17) -> Sent:
    return Sent(partition=5, offset=offset, records=event_chunks(clx5_records(), 400)[0])


def _decode(kind: Kind, message: Encoded, offset: int = 999) -> EventRows:
    decoded = decode_message(kind, 1, offset, message.value, message.headers)
    assert isinstance(decoded, EventRows)
    return decoded


def _columns(rows: EventRows) -> dict[str, list[Any]]:
    return {name: _list(column) for name, column in rows.columns().items()}


def _replaced(message: Encoded, name: str, value: bytes | None) -> Encoded:
    """The message with header `name` set to value (None: removed)."""
    headers = [(k, v) for k, v in message.headers if k != name]
    return Encoded(message.value, headers if value is None else [*headers, (name, value)])


def _header(message: Encoded, name: str) -> bytes:
    return dict(message.headers)[name]


def test_a_bbo_message_gives_one_row_per_entry_keyed_by_its_source() -> None:
    sent = _sent()
    indexes = last_flags(sent.records)[:3]
    bbo = bbo_fields(sent, indexes)["bbo"]
    bbo[2, 0:3] = (UNDEF_PRICE, 0, 0)  # an empty bid side
    decoded = _decode(Kind.BBO, bbo_message(sent, indexes, bbo=bbo))
    assert (decoded.kind, decoded.rows, decoded.sent_ns) == (Kind.BBO, 3, 5_017)
    c = _columns(decoded)
    records = [sent.records[i] for i in indexes]
    # The key is the records message the BBO came from, not the bbo message's own position.
    assert c["source_partition"] == [5, 5, 5]
    assert c["source_offset"] == [17, 17, 17]
    assert c["record_index"] == indexes
    assert c["instrument_id"] == [CLX5_INSTRUMENT] * 3
    assert c["symbol"] == ["CLX5"] * 3
    assert c["replay_id"] == ["replay-test"] * 3  # the run of the records message
    assert c["replay_copy"] == [2] * 3
    assert c["publisher_id"] == [1, 0, 1]  # the consolidated book (odd entry) -> 0
    assert c["sequence"] == [int(records[0]["sequence"]), None, int(records[2]["sequence"])]
    assert c["ts_event"] == [int(r["ts_event"]) for r in records]
    assert c["ts_recv"] == [int(r["ts_recv"]) for r in records]
    assert c["bid_price"] == [int(records[0]["price"]), int(records[1]["price"]), None]
    assert c["bid_size"] == [int(records[0]["size"]), int(records[1]["size"]), 0]
    assert c["bid_count"] == [1, 1, 0]
    assert c["ask_price"] == [int(r["price"]) + CENT for r in records]
    assert c["ask_size"] == [int(r["size"]) + 1 for r in records]
    assert c["ask_count"] == [2, 2, 2]
    assert c["crossed"] == c["locked"] == [False] * 3
    for name in QUALITY_FIELDS:  # one UInt64 column per counter
        assert c[name] == [bbo_quality(i)[name] for i in indexes], name
    assert "quality" not in c  # the Map is an ALIAS of these columns in ClickHouse
    columns = decoded.columns()
    # Wire types: DateTime64(9) as Int64 ns; sizes widened to the UInt64 columns.
    assert isinstance(columns["ts_event"], np.ndarray) and columns["ts_event"].dtype == np.int64
    assert isinstance(columns["bid_size"], np.ndarray) and columns["bid_size"].dtype == np.uint64
    assert isinstance(columns["sequence"], Nullable) and isinstance(columns["bid_price"], Nullable)


def test_bbo_prices_are_exact_and_sizes_u32() -> None:
    sent = _sent()
    bbo = bbo_fields(sent, [0, 1])["bbo"]
    bbo[:, 0] = (64_815_000_000, -1)
    bbo[:, 3] = (100_000_000_000, UNDEF_PRICE)
    bbo[0, 1] = LEVEL_SIZE_MAX + 5  # a total above u32 saturates on the wire
    c = _columns(_decode(Kind.BBO, bbo_message(sent, [0, 1], bbo=bbo)))
    assert c["bid_price"] == [64_815_000_000, -1]
    assert c["ask_price"] == [100_000_000_000, None]
    assert c["bid_size"][0] == LEVEL_SIZE_MAX


def test_crossed_and_locked_books_are_marked() -> None:
    sent = _sent()
    bbo = bbo_fields(sent, [0, 1, 2])["bbo"]
    bbo[:, 0] = (100, 100, 100)
    bbo[:, 3] = (99, 100, UNDEF_PRICE)  # crossed, locked, one side only (neither)
    c = _columns(_decode(Kind.BBO, bbo_message(sent, [0, 1, 2], bbo=bbo)))
    assert c["crossed"] == [True, False, False]
    assert c["locked"] == [False, True, False]


def test_bbo_messages_concatenate() -> None:
    sent = _sent()
    first = _decode(Kind.BBO, bbo_message(sent, [0, 1]))
    second = _decode(Kind.BBO, bbo_message(_sent(18), [2]))
    columns = event_columns([first, second])
    assert _list(columns["source_offset"]) == [17, 17, 18]
    assert _list(columns["record_index"]) == [0, 1, 2]
    assert _list(columns["publisher_id"]) == [1, 0, 1]
    assert _list(columns["sequence"])[1] is None
    assert _list(columns["cancel_unknown_order"]) == [0, 1, 2]
    assert _list(columns["modify_unknown_order"]) == [0, 2, 4]
    assert _list(columns["symbol"]) == ["CLX5"] * 3


def test_a_bbo_message_without_entries_has_no_rows() -> None:
    empty = bbo_message(_sent(), [])
    assert decode_message(Kind.BBO, 0, 0, empty.value, empty.headers) is None


def test_malformed_bbo_messages_are_refused() -> None:
    good = bbo_message(_sent(), [0, 1])

    def refused(message: Encoded, match: str) -> None:
        with pytest.raises(MalformedMessage, match=match):
            decode_message(Kind.BBO, 0, 0, message.value, message.headers)

    # A JSON-era message (no headers), another schema, another topic's message.
    refused(Encoded(b'{"schema": "mbo.bbo/1"}', []), r"not a dbn\.mbp-1 message: mbo-schema=None")
    refused(_replaced(good, "mbo-schema", b"mbo.bbo/1"), r"not a dbn\.mbp-1 message")
    snapshots = snapshot_message(_sent(), [0])
    refused(snapshots, r"not a dbn\.mbp-1 message: mbo-schema=b'dbn\.mbp-10'")
    refused(Encoded(good.value[:-1], good.headers), "value of 159 bytes: not whole 80-byte")
    refused(_replaced(good, "ext", _header(good, "ext")[:72]), r"2 records but 72 bytes of ext")
    refused(_replaced(good, "ext", None), "2 records but 0 bytes of ext")
    refused(_replaced(good, "ext-schema", b"mbo.ext/2"), "unknown ext-schema b'mbo.ext/2'")
    refused(_replaced(good, "ext-schema", None), "unknown ext-schema None")
    for header in ("instrument-id", "source-partition", "source-offset", "sent-ns"):
        refused(_replaced(good, header, None), f"header {header} missing or not an integer")
    refused(_replaced(good, "source-offset", b"x"), "header source-offset missing")
    # Records whose rtype is not MBP-1, or of another instrument than the header's.
    records = decode_bbo(good.value, good.headers).records.copy()
    records["rtype"] = 0x0A
    refused(Encoded(records.tobytes(), good.headers), "rtype other than 0x01")
    refused(_replaced(good, "instrument-id", b"7"), "instruments other than 7")


def test_a_snapshot_message_gives_one_row_with_level_arrays() -> None:
    sent = _sent()
    consolidated = np.array([True])
    decoded = _decode(Kind.SNAPSHOT, snapshot_message(sent, [4], consolidated=consolidated), 555)
    assert (decoded.kind, decoded.rows, decoded.sent_ns) == (Kind.SNAPSHOT, 1, 7_017)
    c = _columns(decoded)
    price = int(sent.records[4]["price"])
    assert c["publisher_id"] == [0]
    assert c["sequence"] == [None]
    assert (c["source_partition"], c["source_offset"], c["record_index"]) == ([5], [17], [4])
    # Depth 10 with two bid levels and one ask level: the defined levels only, best first.
    assert c["bid_prices"] == [[price, price - CENT]]
    assert c["bid_sizes"] == [[3, 7]]
    assert c["bid_counts"] == [[1, 2]]
    assert c["ask_prices"] == [[price + CENT]]
    assert c["ask_sizes"] == [[4]]
    assert c["ask_counts"] == [[1]]
    assert c["depth"] == [10]
    for name in QUALITY_FIELDS:
        assert c[name] == [snapshot_quality(4)[name]], name
    assert c["ts_event"] == [int(sent.records[4]["ts_event"])]
    assert c["symbol"] == ["CLX5"]
    assert (c["crossed"], c["locked"], c["final"]) == ([False], [False], [False])
    columns = decoded.columns()
    assert isinstance(columns["bid_sizes"], Arrays)
    assert columns["bid_sizes"].values.dtype == np.uint64  # the Array(UInt64) column


def test_a_snapshot_with_fewer_levels_than_depth_gives_the_defined_levels() -> None:
    sent = _sent()
    fields = snapshot_fields(sent, [4, 5], depth=3)
    bids, asks = fields["bids"], fields["asks"]
    bids[0, 2] = (64_700_000_000, 9, 4)  # row 0: three bid levels, the whole depth
    asks[0] = UNDEF_PRICE, 0, 0  # ...and no asks
    bids[1, 1] = UNDEF_PRICE, 0, 0  # row 1: one bid level
    asks[1, 1] = (64_900_000_000, 6, 3)  # ...and two asks
    message = snapshot_message(sent, [4, 5], depth=3, bids=bids, asks=asks)
    c = _columns(_decode(Kind.SNAPSHOT, message))
    p4, p5 = int(sent.records[4]["price"]), int(sent.records[5]["price"])
    assert c["depth"] == [3, 3]
    assert c["bid_prices"] == [[p4, p4 - CENT, 64_700_000_000], [p5]]
    assert c["bid_sizes"] == [[3, 7, 9], [3]]
    assert c["bid_counts"] == [[1, 2, 4], [1]]
    assert c["ask_prices"] == [[], [p5 + CENT, 64_900_000_000]]
    assert c["ask_sizes"] == [[], [4, 6]]
    assert c["ask_counts"] == [[], [1, 3]]
    assert c["crossed"] == c["locked"] == [False, False]


def test_a_message_of_several_snapshots_gives_a_row_each_in_order() -> None:
    sent = _sent()
    decoded = _decode(Kind.SNAPSHOT, snapshot_message(sent, [2, 6], final=[False, True]), 9)
    assert decoded.rows == 2
    c = _columns(decoded)
    assert c["record_index"] == [2, 6] and c["final"] == [False, True]
    assert c["source_offset"] == [sent.offset] * 2  # the records message's
    assert [len(levels) for levels in c["bid_prices"]] == [2, 2]
    assert c["cancel_unknown_order"] == [2, 6]
    assert c["unterminated_event_records"] == [2, 6]
    both = event_columns([decoded, _decode(Kind.SNAPSHOT, snapshot_message(_sent(18), [1]))])
    assert _list(both["source_offset"]) == [17, 17, 18]
    assert [len(levels) for levels in _list(both["ask_prices"])] == [1, 1, 1]
    assert _list(both["final"]) == [False, True, False]


def test_malformed_snapshot_messages_are_refused() -> None:
    good = snapshot_message(_sent(), [1, 2])

    def refused(message: Encoded, match: str) -> None:
        with pytest.raises(MalformedMessage, match=match):
            decode_message(Kind.SNAPSHOT, 0, 0, message.value, message.headers)

    refused(bbo_message(_sent(), [0]), r"not a dbn\.mbp-10 message: mbo-schema=b'dbn\.mbp-1'")
    refused(_replaced(good, "mbo-schema", b"mbo.snapshots/2"), r"not a dbn\.mbp-10 message")
    refused(Encoded(good.value[:368], good.headers), "1 records but 144 bytes of ext")
    refused(Encoded(good.value + b"\0" * 80, good.headers), "not whole 368-byte records")
    refused(_replaced(good, "ext", _header(good, "ext") + bytes(72)), "2 records but 216 bytes")
    refused(_replaced(good, "ext-schema", b"mbo.ext/9"), "unknown ext-schema")
    for header in ("depth", "instrument-id", "source-partition", "source-offset"):
        refused(_replaced(good, header, None), f"header {header} missing or not an integer")
    records = decode_snapshots(good.value, good.headers).records.copy()
    records["rtype"][1] = 0x01
    refused(Encoded(records.tobytes(), good.headers), "rtype other than 0x0a")


def test_undefined_prices_stay_as_dbn_has_them_in_raw_records() -> None:
    records = np.zeros(2, dtype=MBO_DTYPE)
    records["rtype"], records["length"] = RTYPE_MBO, MBO_LENGTH_WORDS
    records["action"], records["side"] = ord("R"), ord("N")
    records["price"] = UNDEF_PRICE
    decoded = decode_message(Kind.RECORDS, 0, 0, records.tobytes(), _headers(records))
    assert isinstance(decoded, RecordChunk)
    assert _list(decoded.columns()["price"]) == [UNDEF_PRICE] * 2
