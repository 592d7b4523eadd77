"""Decoding Kafka messages into table columns (pure): each topic kind, per mbo_core/schemas.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from mbo_core.prices import UNDEF_PRICE
from mbo_core.records import MBO_DTYPE
from mbo_core.schemas import end_of_stream_headers, records_headers
from sink.decode import (
    DecodeError,
    EventRows,
    Kind,
    RecordChunk,
    decode_message,
    event_columns,
    record_columns,
)
from sink.native import Arrays, Maps, Nullable, Strings
from tests.sink.wire import (
    CLX5_INSTRUMENT,
    QUALITY,
    Sent,
    bbo_message,
    clx5_records,
    event_chunks,
    last_flags,
    snapshot,
    snapshot_message,
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
    assert isinstance(column, Strings | Nullable | Arrays | Maps)
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
    assert _list(columns["source_partition"]) == [3] * n
    assert _list(columns["source_offset"]) == [41] * n
    assert _list(columns["record_index"]) == list(range(n))
    # Wire types: DateTime64(9) as Int64 ns, Enum8 as Int8 codes.
    assert isinstance(columns["ts_event"], np.ndarray)
    assert columns["ts_event"].dtype == np.int64
    assert isinstance(columns["action"], np.ndarray)
    assert columns["action"].dtype == np.int8
    assert set(_list(columns["action"])) <= set(b"ACFMNRT")


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
    with pytest.raises(DecodeError, match="not whole 56-byte"):
        decode_message(Kind.RECORDS, 0, 1, chunk.tobytes()[:-1], _headers(chunk))
    with pytest.raises(DecodeError, match="records=4 but 3"):
        decode_message(Kind.RECORDS, 0, 1, chunk[:3].tobytes(), _headers(chunk))
    with pytest.raises(DecodeError, match="not a records message"):
        decode_message(Kind.RECORDS, 0, 1, chunk.tobytes(), [("mbo-schema", b"other")])
    chunk["action"][2] = ord("X")
    with pytest.raises(DecodeError, match=r"actions \['X'\]"):
        decode_message(Kind.RECORDS, 0, 1, chunk.tobytes(), _headers(chunk))
    chunk["action"][2] = ord("A")
    chunk["side"][0] = 0
    with pytest.raises(DecodeError, match="sides"):
        decode_message(Kind.RECORDS, 0, 1, chunk.tobytes(), _headers(chunk))


def _sent(offset: int = 17) -> Sent:
    return Sent(partition=5, offset=offset, records=event_chunks(clx5_records(), 400)[0])


def _bbo(payload: dict[str, Any], offset: int = 999) -> EventRows:
    decoded = decode_message(Kind.BBO, 1, offset, orjson.dumps(payload), [])
    assert isinstance(decoded, EventRows)
    return decoded


def test_a_bbo_message_gives_one_row_per_entry_keyed_by_its_source() -> None:
    sent = _sent()
    indexes = last_flags(sent.records)[:3]
    payload = bbo_message(sent, indexes)
    payload["bid_price"][2] = None  # an empty bid side
    decoded = _bbo(payload)
    assert (decoded.kind, decoded.rows, decoded.sent_ns) == (Kind.BBO, 3, 5_017)
    c = {name: _list(column) for name, column in decoded.columns.items()}
    records = [sent.records[i] for i in indexes]
    # The key is the records message the BBO came from, not the bbo message's own position.
    assert c["source_partition"] == [5, 5, 5]
    assert c["source_offset"] == [17, 17, 17]
    assert c["record_index"] == indexes
    assert c["instrument_id"] == [CLX5_INSTRUMENT] * 3
    assert c["symbol"] == ["CLX5"] * 3
    assert c["publisher_id"] == [1, 0, 1]  # null (consolidated) -> 0
    assert c["sequence"] == [int(records[0]["sequence"]), None, int(records[2]["sequence"])]
    assert c["ts_event"] == [int(r["ts_event"]) for r in records]
    assert c["bid_price"] == [int(records[0]["price"]), int(records[1]["price"]), None]
    assert c["ask_price"] == [int(r["price"]) + 10_000_000 for r in records]
    assert c["bid_size"] == [int(r["size"]) for r in records]
    assert c["ask_count"] == [2, 2, 2]
    assert c["crossed"] == [False] * 3
    assert c["quality"] == [{QUALITY[0]: i, QUALITY[1]: 2 * i} for i in indexes]  # one map per row
    assert decoded.columns["ts_event"].dtype == np.int64  # type: ignore[union-attr]


def test_bbo_prices_are_exact_decimals() -> None:
    payload = bbo_message(_sent(), [0, 1])
    payload["bid_price"] = ["64.815", "-0.000000001"]
    payload["ask_price"] = ["100", None]
    c = _bbo(payload).columns
    assert _list(c["bid_price"]) == [64_815_000_000, -1]
    assert _list(c["ask_price"]) == [100_000_000_000, None]
    payload["bid_price"] = ["1.0000000001", None]  # below 1e-9
    with pytest.raises(DecodeError, match="bid_price"):
        _bbo(payload)


def test_bbo_messages_concatenate() -> None:
    sent = _sent()
    first = _bbo(bbo_message(sent, [0, 1]))
    second = _bbo(bbo_message(_sent(18), [2]))
    columns = event_columns([first, second])
    assert _list(columns["source_offset"]) == [17, 17, 18]
    assert _list(columns["record_index"]) == [0, 1, 2]
    assert _list(columns["sequence"])[1] is None
    assert len(_list(columns["quality"])) == 3


def test_malformed_bbo_messages_are_refused() -> None:
    good = bbo_message(_sent(), [0, 1])
    with pytest.raises(DecodeError, match="not JSON"):
        decode_message(Kind.BBO, 0, 0, b"{nope", [])
    with pytest.raises(DecodeError, match=r"not a mbo\.bbo/1 message"):
        _bbo({**good, "schema": "mbo.bbo/2"})
    with pytest.raises(DecodeError, match="differ in length"):
        _bbo({**good, "ts_event": good["ts_event"][:1]})
    with pytest.raises(DecodeError, match="source"):
        _bbo({key: value for key, value in good.items() if key != "source"})
    with pytest.raises(DecodeError, match="publisher_id"):
        _bbo({**good, "publisher_id": [70_000, 1]})
    with pytest.raises(DecodeError, match="unexpected shape"):
        _bbo({**good, "symbol": 5})
    with pytest.raises(DecodeError):
        _bbo({**good, "quality": {"cancel_unknown_order": 3}})
    empty = {**good, **{name: [] for name in good if isinstance(good[name], list)}}
    empty["quality"] = {}
    assert decode_message(Kind.BBO, 0, 0, orjson.dumps(empty), []) is None


def test_a_snapshot_message_gives_one_row_with_level_arrays() -> None:
    sent = _sent()
    payload = snapshot_message(sent, 4)
    payload["snapshots"][0]["publisher_id"] = None  # consolidated
    payload["snapshots"][0]["sequence"] = None
    decoded = decode_message(Kind.SNAPSHOT, 2, 555, orjson.dumps(payload), [])
    assert isinstance(decoded, EventRows)
    assert (decoded.kind, decoded.rows, decoded.sent_ns) == (Kind.SNAPSHOT, 1, 7_017)
    c = {name: _list(column) for name, column in decoded.columns.items()}
    price = int(sent.records[4]["price"])
    assert c["publisher_id"] == [0]
    assert c["sequence"] == [None]
    assert (c["source_partition"], c["source_offset"], c["record_index"]) == ([5], [17], [4])
    assert c["bid_prices"] == [[price, price - 10_000_000]]
    assert c["bid_sizes"] == [[3, 7]]
    assert c["bid_counts"] == [[1, 2]]
    assert c["ask_prices"] == [[price + 10_000_000]]
    assert c["depth"] == [10]
    assert c["quality"] == [dict.fromkeys(QUALITY, 4)]
    assert c["ts_event"] == [int(sent.records[4]["ts_event"])]

    assert c["final"] == [False]

    payload["snapshots"][0]["asks"] = []
    payload["snapshots"][0]["bids"] = [{"price": "64.8", "size": 1, "count": 1}]
    one_side = decode_message(Kind.SNAPSHOT, 2, 556, orjson.dumps(payload), [])
    assert isinstance(one_side, EventRows)
    assert _list(one_side.columns["ask_prices"]) == [[]]
    assert _list(one_side.columns["bid_prices"]) == [[64_800_000_000]]


def test_a_message_of_several_snapshots_gives_a_row_each_in_order() -> None:
    sent = _sent()
    payload = snapshot_message(sent, 2)
    payload["snapshots"].append(snapshot(sent, 6, final=True))
    decoded = decode_message(Kind.SNAPSHOT, 1, 9, orjson.dumps(payload), [])
    assert isinstance(decoded, EventRows) and decoded.rows == 2
    c = {name: _list(column) for name, column in decoded.columns.items()}
    assert c["record_index"] == [2, 6] and c["final"] == [False, True]
    assert c["source_offset"] == [payload["source"]["offset"]] * 2  # the records message's
    assert [len(levels) for levels in c["bid_prices"]] == [2, 2]
    assert c["quality"] == [dict.fromkeys(QUALITY, 2), dict.fromkeys(QUALITY, 6)]


def test_malformed_snapshot_messages_are_refused() -> None:
    good = snapshot_message(_sent(), 1)
    with pytest.raises(DecodeError, match=r"not a mbo\.snapshots/2"):
        decode_message(Kind.SNAPSHOT, 0, 0, orjson.dumps(bbo_message(_sent(), [0])), [])
    with pytest.raises(DecodeError, match="depth"):
        decode_message(Kind.SNAPSHOT, 0, 0, orjson.dumps({**good, "depth": None}), [])
    bad_levels = {**good, "snapshots": [{**good["snapshots"][0], "bids": [{"price": "x"}]}]}
    with pytest.raises(DecodeError, match="bids"):
        decode_message(Kind.SNAPSHOT, 0, 0, orjson.dumps(bad_levels), [])
    with pytest.raises(DecodeError, match="without snapshots"):
        decode_message(Kind.SNAPSHOT, 0, 0, orjson.dumps({**good, "snapshots": []}), [])


def test_undefined_prices_stay_as_dbn_has_them_in_raw_records() -> None:
    records = np.zeros(2, dtype=MBO_DTYPE)
    records["action"], records["side"] = ord("R"), ord("N")
    records["price"] = UNDEF_PRICE
    decoded = decode_message(Kind.RECORDS, 0, 0, records.tobytes(), _headers(records))
    assert isinstance(decoded, RecordChunk)
    assert _list(decoded.columns()["price"]) == [UNDEF_PRICE] * 2
