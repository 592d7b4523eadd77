"""Native inserts into the three tables against a real ClickHouse (chDB or a server)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from clickhouse_connect.driver.client import Client

from mbo_core.errors import MboError
from mbo_core.prices import UNDEF_PRICE
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.storage.clickhouse import apply_schema
from mbo_core.wire import Encoded
from sink.decode import EventRows, Kind, RecordChunk, decode_message, record_columns
from sink.native import ColumnSpec, Dictionary, encode_block
from sink.writer import InsertError, check_tables, insert_block, insert_events, insert_records
from tests.sink.wire import (
    CENT,
    Sent,
    bbo_fields,
    bbo_message,
    bbo_quality,
    clx5_records,
    event_chunks,
    last_flags,
    snapshot_message,
    snapshot_quality,
)

pytestmark = pytest.mark.integration


def _chunk(records: np.ndarray, partition: int, offset: int) -> RecordChunk:
    return RecordChunk(partition, offset, "CLX5", 0, records)


def _rows(client: Client, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in client.query(sql).result_rows]


def test_records_round_trip_exactly(clickhouse_client: Client) -> None:
    apply_schema(clickhouse_client)
    check_tables(clickhouse_client)
    chunks = event_chunks(clx5_records(), 2000)[:3]
    result = insert_records(
        clickhouse_client, [_chunk(chunk, 2, 10 + i) for i, chunk in enumerate(chunks)]
    )
    records = np.concatenate(chunks)
    assert (result.table, result.rows) == ("mbo_records", len(records))
    rows = _rows(
        clickhouse_client,
        "SELECT toUnixTimestamp64Nano(ts_event), toUnixTimestamp64Nano(ts_recv), ts_in_delta, "
        "sequence, publisher_id, instrument_id, symbol, order_id, price, size, flags, channel_id, "
        "toString(action), toString(side), source_partition, source_offset, record_index "
        "FROM mbo_records FINAL ORDER BY source_offset, record_index",
    )
    expected = [
        (
            int(r["ts_event"]), int(r["ts_recv"]), int(r["ts_in_delta"]), int(r["sequence"]),
            int(r["publisher_id"]), int(r["instrument_id"]), "CLX5", int(r["order_id"]),
            int(r["price"]), int(r["size"]), int(r["flags"]), int(r["channel_id"]),
            chr(r["action"]), chr(r["side"]), 2, 10 + i, j,
        )
        for i, chunk in enumerate(chunks)
        for j, r in enumerate(chunk)
    ]  # fmt: skip
    assert rows == expected


def test_records_keep_each_messages_symbol_and_run(clickhouse_client: Client) -> None:
    """symbol and replay_id travel as LowCardinality with the block's own dictionary: each row
    gets its message's values back, whatever their order."""
    apply_schema(clickhouse_client)
    chunks = event_chunks(clx5_records(), 50)[:4]
    runs = [("CLX5", "run-a", 1), ("CLZ5", "run-b", 1), ("CLX5", "run-b", 2), ("", "", 0)]
    insert_records(
        clickhouse_client,
        [
            RecordChunk(0, i, symbol, 0, chunk, replay_id=run, replay_copy=copy)
            for i, (chunk, (symbol, run, copy)) in enumerate(zip(chunks, runs, strict=True))
        ],
    )
    rows = _rows(
        clickhouse_client,
        "SELECT source_offset, symbol, replay_id, replay_copy, count() FROM mbo_records "
        "GROUP BY ALL ORDER BY source_offset",
    )
    assert rows == [(i, *run, len(chunks[i])) for i, run in enumerate(runs)]


@pytest.mark.parametrize("keys", [0, 1, 300, 70_000])
def test_dictionary_columns_of_every_index_width(clickhouse_client: Client, keys: int) -> None:
    """UInt8, UInt16 and UInt32 indexes, and an empty column, as the engine reads them."""
    clickhouse_client.command(
        "CREATE TABLE lc (s LowCardinality(String), n UInt32) ENGINE = MergeTree ORDER BY n"
    )
    texts = [f"key-{i}" for i in range(keys)]
    counts = np.full(keys, 2, dtype=np.int64)
    column = Dictionary.repeated(texts, counts)
    specs = [ColumnSpec("s", "LowCardinality(String)"), ColumnSpec("n", "UInt32", np.dtype("u4"))]
    block = encode_block(specs, {"s": column, "n": np.arange(2 * keys, dtype=np.uint32)})
    clickhouse_client.raw_insert("lc", ["s", "n"], block, fmt="Native")
    rows = _rows(clickhouse_client, "SELECT s FROM lc ORDER BY n")
    assert [row[0] for row in rows] == [text for text in texts for _ in range(2)]


def _event_rows(kind: Kind, message: Encoded) -> EventRows:
    decoded = decode_message(kind, 0, 0, message.value, message.headers)
    assert isinstance(decoded, EventRows)
    return decoded


def test_bbo_and_snapshot_rows_round_trip(clickhouse_client: Client) -> None:
    apply_schema(clickhouse_client)
    sent = Sent(1, 30, event_chunks(clx5_records(), 500)[0])
    indexes = last_flags(sent.records)[:4]
    bbo_levels = bbo_fields(sent, indexes)["bbo"]
    bbo_levels[0, 3:6] = (UNDEF_PRICE, 0, 0)  # an empty ask side
    bbo = _event_rows(Kind.BBO, bbo_message(sent, indexes, bbo=bbo_levels))
    assert insert_events(clickhouse_client, [bbo]).rows == 4
    quality_columns = ", ".join(QUALITY_FIELDS)
    rows = _rows(
        clickhouse_client,
        "SELECT publisher_id, sequence, record_index, bid_price, ask_price, bid_size, ask_count, "
        f"crossed, symbol, quality, {quality_columns} FROM bbo ORDER BY record_index, publisher_id",
    )
    records = [sent.records[i] for i in indexes]
    assert rows == [
        (
            0 if n % 2 else 1,
            None if n % 2 else int(r["sequence"]),
            i,
            int(r["price"]),
            None if n == 0 else int(r["price"]) + CENT,
            int(r["size"]),
            0 if n == 0 else 2,
            False,
            "CLX5",
            bbo_quality(i),  # the ALIAS Map of the counter columns
            *bbo_quality(i).values(),
        )
        for n, (i, r) in enumerate(zip(indexes, records, strict=True))
    ]

    snapshots = [_event_rows(Kind.SNAPSHOT, snapshot_message(sent, [i])) for i in indexes[:2]]
    assert insert_events(clickhouse_client, snapshots).rows == 2
    price = int(records[0]["price"])
    assert _rows(
        clickhouse_client,
        "SELECT record_index, depth, bid_prices, bid_sizes, ask_prices, ask_counts, quality, "
        f"final, {quality_columns} FROM book_snapshots ORDER BY record_index LIMIT 1",
    ) == [
        (
            indexes[0],
            10,
            [price, price - CENT],
            [3, 7],
            [price + CENT],
            [1],
            snapshot_quality(indexes[0]),
            False,
            *snapshot_quality(indexes[0]).values(),
        )
    ]


def test_a_refused_insert_is_not_retryable(clickhouse_client: Client) -> None:
    apply_schema(clickhouse_client)
    # A schema that moved on under a running sink: the server refuses the block, and sending it
    # again cannot help.
    clickhouse_client.command("ALTER TABLE mbo_records DROP COLUMN channel_id")
    columns = record_columns([_chunk(clx5_records()[:2], 0, 0)])
    with pytest.raises(InsertError, match="insert into mbo_records failed") as failure:
        insert_block(clickhouse_client, "mbo_records", columns)
    assert failure.value.retryable is False
    assert _rows(clickhouse_client, "SELECT count() FROM mbo_records") == [(0,)]


def test_a_table_missing_a_column_is_reported(clickhouse_client: Client) -> None:
    apply_schema(clickhouse_client)
    clickhouse_client.command("ALTER TABLE bbo DROP COLUMN locked")
    with pytest.raises(MboError, match=r"bbo lacks columns \['locked'\]"):
        check_tables(clickhouse_client)
