"""Columnar inserts into mbo_records, bbo and book_snapshots in ClickHouse's Native format.

Each insert is one Native block (`sink.native`) sent with `client.raw_insert(fmt="Native")`:
the same bytes over HTTP to a server and into chDB. Synchronous, like clickhouse-connect; the
sink runs it in a worker thread.

Inserts use `optimize_on_insert=0`: ReplacingMergeTree would otherwise deduplicate each block
while writing it, work that FINAL and background merges do anyway (measured: 20-40% faster raw
record inserts). Duplicate rows therefore always collapse only at merge or FINAL time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from mbo_core.errors import MboError
from mbo_core.metrics import INSERT_SECONDS, ROWS_INSERTED
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.storage.clickhouse import column_types
from sink.decode import TABLES, EventRows, Kind, RecordChunk, event_columns, record_columns
from sink.native import Column, ColumnSpec, encode_block, row_count

log = logging.getLogger(__name__)

INSERT_SETTINGS = {"optimize_on_insert": 0}


def _spec(name: str, native_type: str, dtype: type[np.generic] | None) -> ColumnSpec:
    return ColumnSpec(name, native_type, None if dtype is None else np.dtype(dtype))


def _ts(name: str) -> ColumnSpec:
    # DateTime64(9) travels as Int64 nanoseconds since the epoch.
    return ColumnSpec(name, "DateTime64(9, 'UTC')", np.dtype(np.int64))


# Types as sent. They differ from the DDL where the server converts cheaply and exactly:
# Enum8 travels as its Int8 code. (LowCardinality(String) travels as itself, with the block's
# own dictionary, sink.native.Dictionary: the engine need not hash every row's string.) The
# Int8 -> Enum8 conversion does NOT check the code (measured: an unknown code is stored and
# every later toString(action) fails), which is why sink.decode refuses records whose action or
# side the enums lack.
#: The run the rows belong to (the records message's replay-id and replay-copy headers).
_RUN = (
    _spec("replay_id", "LowCardinality(String)", None),
    _spec("replay_copy", "UInt32", np.uint32),
)
_KEY_TAIL = (
    _spec("source_partition", "UInt16", np.uint16),
    _spec("source_offset", "UInt64", np.uint64),
    _spec("record_index", "UInt32", np.uint32),
)
MBO_RECORDS_COLUMNS: tuple[ColumnSpec, ...] = (
    _ts("ts_recv"),
    _ts("ts_event"),
    _spec("ts_in_delta", "Int32", np.int32),
    _spec("sequence", "UInt32", np.uint32),
    _spec("publisher_id", "UInt16", np.uint16),
    _spec("instrument_id", "UInt32", np.uint32),
    _spec("symbol", "LowCardinality(String)", None),
    _spec("order_id", "UInt64", np.uint64),
    _spec("price", "Int64", np.int64),
    _spec("size", "UInt32", np.uint32),
    _spec("flags", "UInt8", np.uint8),
    _spec("channel_id", "UInt8", np.uint8),
    _spec("action", "Int8", np.int8),
    _spec("side", "Int8", np.int8),
    *_RUN,
    *_KEY_TAIL,
)
_EVENT_HEAD = (
    _spec("instrument_id", "UInt32", np.uint32),
    _spec("publisher_id", "UInt16", np.uint16),
    _spec("symbol", "LowCardinality(String)", None),
    _ts("ts_event"),
    _ts("ts_recv"),
    _spec("sequence", "Nullable(UInt32)", np.uint32),
    *_RUN,
    *_KEY_TAIL,
)
_EVENT_TAIL = (
    _spec("crossed", "Bool", np.bool_),
    _spec("locked", "Bool", np.bool_),
    *(_spec(name, "UInt64", np.uint64) for name in QUALITY_FIELDS),
)
BBO_COLUMNS: tuple[ColumnSpec, ...] = (
    *_EVENT_HEAD,
    _spec("bid_price", "Nullable(Int64)", np.int64),
    _spec("bid_size", "UInt64", np.uint64),
    _spec("bid_count", "UInt32", np.uint32),
    _spec("ask_price", "Nullable(Int64)", np.int64),
    _spec("ask_size", "UInt64", np.uint64),
    _spec("ask_count", "UInt32", np.uint32),
    *_EVENT_TAIL,
)
BOOK_SNAPSHOTS_COLUMNS: tuple[ColumnSpec, ...] = (
    *_EVENT_HEAD,
    _spec("depth", "UInt16", np.uint16),
    _spec("bid_prices", "Array(Int64)", np.int64),
    _spec("bid_sizes", "Array(UInt64)", np.uint64),
    _spec("bid_counts", "Array(UInt32)", np.uint32),
    _spec("ask_prices", "Array(Int64)", np.int64),
    _spec("ask_sizes", "Array(UInt64)", np.uint64),
    _spec("ask_counts", "Array(UInt32)", np.uint32),
    *_EVENT_TAIL,
    _spec("final", "Bool", np.bool_),
)
TABLE_COLUMNS: dict[str, tuple[ColumnSpec, ...]] = {
    TABLES[Kind.RECORDS]: MBO_RECORDS_COLUMNS,
    TABLES[Kind.BBO]: BBO_COLUMNS,
    TABLES[Kind.SNAPSHOT]: BOOK_SNAPSHOTS_COLUMNS,
}


class InsertError(MboError):
    """An insert failed. `retryable`: the server or connection failed, not the data."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class InsertResult:
    table: str
    rows: int
    seconds: float


def check_tables(client: Client) -> None:
    """MboError unless every column the sink writes exists in its table (a schema that moved
    on without the sink is reported at start, not at the first insert)."""
    for table, specs in TABLE_COLUMNS.items():
        present = column_types(client, table)
        missing = [spec.name for spec in specs if spec.name not in present]
        if missing:
            raise MboError(f"ClickHouse table {client.database}.{table} lacks columns {missing}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


def insert_block(client: Client, table: str, columns: dict[str, Column]) -> InsertResult:
    """Insert columns into table as one Native block; InsertError if ClickHouse refuses."""
    specs = TABLE_COLUMNS[table]
    block = encode_block(specs, columns)
    rows = row_count(columns[specs[0].name])
    started = time.perf_counter()
    try:
        client.raw_insert(
            table,
            [spec.name for spec in specs],
            block,
            settings=INSERT_SETTINGS,
            fmt="Native",
        )
    except ClickHouseError as exc:
        # OperationalError: the connection or the server failed, a retry may succeed. Other
        # errors are the server refusing this block (data or schema): a retry sends the same.
        retryable = isinstance(exc, OperationalError) or _transient(exc)
        raise InsertError(
            f"insert into {table} failed: {_one_line(exc)}", retryable=retryable
        ) from None
    seconds = time.perf_counter() - started
    INSERT_SECONDS.labels(table=table).observe(seconds)
    ROWS_INSERTED.labels(table=table).inc(rows)
    return InsertResult(table, rows, seconds)


# Server error codes worth a retry: memory, too many parts (merges catch up), timeouts,
# a replica or keeper going away.
_TRANSIENT_CODES = {159, 202, 209, 210, 241, 242, 252, 319, 425, 999}


def _transient(exc: ClickHouseError) -> bool:
    code = getattr(exc, "code", None)
    return isinstance(code, int) and code in _TRANSIENT_CODES


def insert_records(client: Client, chunks: Sequence[RecordChunk]) -> InsertResult:
    """Insert the records of `chunks` into mbo_records (one row per record)."""
    return insert_block(client, TABLES[Kind.RECORDS], record_columns(chunks))


def insert_events(client: Client, parts: Sequence[EventRows]) -> InsertResult:
    """Insert bbo or snapshot rows (all of one kind) into their table."""
    table = TABLES[parts[0].kind]
    return insert_block(client, table, event_columns(parts))
