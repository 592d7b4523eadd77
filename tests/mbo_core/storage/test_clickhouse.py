"""ClickHouse schema, migrations and columnar inserts against a real engine (chDB or a server)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client

from mbo_core.errors import MboError
from mbo_core.kafka.probes import free_port
from mbo_core.prices import UNDEF_PRICE
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.records import MBO_DTYPE
from mbo_core.storage.clickhouse import (
    Migration,
    applied_migrations,
    apply_schema,
    connect,
    insert_columns,
    migrations,
    split_statements,
)
from tests.conftest import make_settings

TS0 = 1_761_000_000_000_000_000  # 2025-10-20T22:40:00Z in ns


def test_split_statements_drops_comments_only_chunks() -> None:
    sql = "-- header\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\n\n-- b\nSELECT 1;\n-- trailer\n"
    assert split_statements(sql) == [
        "-- header\nCREATE TABLE a (x UInt8)\nENGINE = Memory",
        "-- b\nSELECT 1",
    ]


def test_migrations_are_numbered_in_order() -> None:
    found = migrations()
    assert [m.version for m in found] == sorted({m.version for m in found})
    assert found[0].name == "0001_initial.sql"
    for migration in found:
        assert migration.statements(), migration.name


def _records(count: int) -> np.ndarray:
    """Raw DBN MBO records, as a sink decodes them from a Kafka chunk."""
    records = np.zeros(count, dtype=MBO_DTYPE)
    records["publisher_id"] = 1
    records["instrument_id"] = np.arange(count) % 2 + 100
    records["ts_event"] = TS0 + np.arange(count) * 1_000
    records["ts_recv"] = records["ts_event"] + 500
    records["ts_in_delta"] = 1234
    records["sequence"] = np.arange(count) + 1
    records["order_id"] = np.arange(count) + 10**12
    records["price"] = 64_810_000_000 + np.arange(count) * 10_000_000
    records["price"][-1] = UNDEF_PRICE
    records["size"] = 5
    records["flags"] = 128
    records["action"] = [ord("A"), ord("C"), ord("M"), ord("T")] * (count // 4) + [ord("R")] * (
        count % 4
    )
    records["side"] = [ord("B"), ord("A")] * (count // 2) + [ord("N")] * (count % 2)
    return records


def _record_columns(records: np.ndarray, offset: int) -> dict[str, object]:
    columns: dict[str, object] = {
        name: records[name] for name in MBO_DTYPE.names or () if name not in ("length", "rtype")
    }
    columns["symbol"] = pa.array(["CLX5"] * len(records), type=pa.string())
    columns["source_partition"] = np.full(len(records), 3, dtype=np.int64)
    columns["source_offset"] = np.full(len(records), offset, dtype=np.int64)
    columns["record_index"] = np.arange(len(records), dtype=np.uint32)
    return columns


def _texts(values: list[object]) -> list[str]:
    # Arrow output gives String columns as binary unless the server is told otherwise.
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


@pytest.mark.integration
def test_schema_applies_once_and_is_recorded(clickhouse_client: Client) -> None:
    first = apply_schema(clickhouse_client)
    assert [m.name for m in first] == [m.name for m in migrations()]
    assert apply_schema(clickhouse_client) == []  # idempotent

    recorded = applied_migrations(clickhouse_client)
    assert recorded == {m.version: (m.name, m.checksum) for m in migrations()}

    tables = {
        str(name): str(engine)
        for name, engine in clickhouse_client.query(
            "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    }
    assert tables == {
        "schema_migrations": "ReplacingMergeTree",
        "mbo_records": "ReplacingMergeTree",
        "bbo": "ReplacingMergeTree",
        "book_snapshots": "ReplacingMergeTree",
        "symbology": "AggregatingMergeTree",
        "symbology_from_records": "MaterializedView",
    }
    keys = {
        str(name): str(key)
        for name, key in clickhouse_client.query(
            "SELECT name, sorting_key FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    }
    assert keys["mbo_records"].endswith("source_partition, source_offset, record_index")


@pytest.mark.integration
def test_a_changed_migration_is_refused(clickhouse_client: Client) -> None:
    apply_schema(clickhouse_client)
    original = migrations()[0]
    edited = Migration(original.version, original.name, original.sql + "\n-- edited\n")
    with pytest.raises(MboError, match="changed after it was applied"):
        apply_schema(clickhouse_client, [edited])


@pytest.mark.integration
def test_a_failing_migration_is_reported_and_not_recorded(clickhouse_client: Client) -> None:
    broken = Migration(98, "0098_broken.sql", "ALTER TABLE no_such_table ADD COLUMN x UInt8;\n")
    with pytest.raises(MboError, match=r"ClickHouse migration 0098_broken\.sql failed: .*no_such"):
        apply_schema(clickhouse_client, [broken])
    assert 98 not in applied_migrations(clickhouse_client)


@pytest.mark.integration
def test_a_later_migration_is_applied_on_top(clickhouse_client: Client) -> None:
    apply_schema(clickhouse_client)
    later = Migration(
        99,
        "0099_add_note.sql",
        "ALTER TABLE bbo ADD COLUMN IF NOT EXISTS note String DEFAULT '';\n",
    )
    assert apply_schema(clickhouse_client, [*migrations(), later]) == [later]
    assert 99 in applied_migrations(clickhouse_client)
    columns = clickhouse_client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'bbo'"
    ).result_rows
    assert ("note",) in columns


@pytest.mark.integration
def test_columnar_insert_round_trips_mbo_records(clickhouse_client: Client) -> None:
    apply_schema(clickhouse_client)
    records = _records(10)
    assert insert_columns(clickhouse_client, "mbo_records", _record_columns(records, 7)) == 10

    table = clickhouse_client.query_arrow(
        "SELECT toUnixTimestamp64Nano(ts_event) AS ts_event_ns, toUnixTimestamp64Nano(ts_recv) "
        "AS ts_recv_ns, ts_event, instrument_id, order_id, price, price_decimal, size, flags, "
        "toString(action) AS action, toString(side) AS side, symbol, sequence, ts_in_delta, "
        "source_partition, source_offset, "
        "record_index FROM mbo_records ORDER BY record_index"
    )
    column = table.to_pydict()
    assert column["ts_event_ns"] == records["ts_event"].tolist()
    assert column["ts_recv_ns"] == records["ts_recv"].tolist()
    assert str(table.schema.field("ts_event").type) == "timestamp[ns, tz=UTC]"
    assert column["price"] == records["price"].tolist()
    assert str(column["price_decimal"][0]) == "64.810000000"
    assert column["price_decimal"][-1] is None  # UNDEF_PRICE has no decimal value
    assert column["order_id"] == records["order_id"].tolist()
    # Enum8 keeps the raw DBN byte as its code and shows the letter.
    assert _texts(column["action"]) == [chr(code) for code in records["action"]]
    assert _texts(column["side"]) == [chr(code) for code in records["side"]]
    assert set(_texts(column["symbol"])) == {"CLX5"}
    assert column["sequence"] == records["sequence"].tolist()
    assert column["ts_in_delta"] == [1234] * 10
    assert column["source_offset"] == [7] * 10
    assert column["record_index"] == list(range(10))


@pytest.mark.integration
def test_redelivered_rows_collapse_with_final(clickhouse_client: Client) -> None:
    apply_schema(clickhouse_client)
    records = _records(8)
    insert_columns(clickhouse_client, "mbo_records", _record_columns(records, 11))
    insert_columns(clickhouse_client, "mbo_records", _record_columns(records, 11))  # redelivery
    insert_columns(clickhouse_client, "mbo_records", _record_columns(records[:2], 12))  # new
    count = "SELECT count() FROM mbo_records"
    assert clickhouse_client.query(count).result_rows[0][0] == 18
    assert clickhouse_client.query(count + " FINAL").result_rows[0][0] == 10


@pytest.mark.integration
def test_bbo_and_snapshot_rows(clickhouse_client: Client) -> None:
    apply_schema(clickhouse_client)
    header = {
        "instrument_id": np.array([100, 100], dtype=np.uint32),
        "publisher_id": np.array([1, 0], dtype=np.uint16),  # 0 = consolidated
        "symbol": ["CLX5", "CLX5"],
        "ts_event": np.array([TS0, TS0], dtype=np.uint64),
        "ts_recv": np.array([TS0 + 5, TS0 + 5], dtype=np.uint64),
        "sequence": np.ma.masked_array(np.array([42, 0], dtype=np.uint32), mask=[False, True]),
        "source_partition": np.array([0, 0]),
        "source_offset": np.array([9, 9]),
        "record_index": np.array([3, 3]),
        "crossed": np.array([False, True]),
        "locked": np.array([False, False]),
        "cancel_unknown_order": np.array([2, 0], dtype=np.uint64),
    }
    insert_columns(
        clickhouse_client,
        "bbo",
        {
            **header,
            "bid_price": np.ma.masked_array(
                np.array([64_800_000_000, 0], dtype=np.int64), mask=[False, True]
            ),
            "bid_size": np.array([10, 0], dtype=np.uint64),
            "bid_count": np.array([2, 0], dtype=np.uint32),
            "ask_price": np.array([64_810_000_000, 64_790_000_000], dtype=np.int64),
            "ask_size": np.array([3, 4], dtype=np.uint64),
            "ask_count": np.array([1, 1], dtype=np.uint32),
        },
    )
    rows = clickhouse_client.query(
        "SELECT publisher_id, sequence, bid_price, ask_price, crossed, cancel_unknown_order, "
        "quality['cancel_unknown_order'], quality['invalid_record'] FROM bbo FINAL "
        "ORDER BY publisher_id"
    ).result_rows
    assert rows == [  # the counters not given are 0, in the columns and the quality alias
        (0, None, None, 64_790_000_000, True, 0, 0, 0),
        (1, 42, 64_800_000_000, 64_810_000_000, False, 2, 2, 0),
    ]

    levels = pa.list_(pa.int64())
    insert_columns(
        clickhouse_client,
        "book_snapshots",
        {
            **header,
            "depth": np.array([10, 10]),
            "bid_prices": pa.array([[64_800_000_000, 64_790_000_000], []], type=levels),
            "bid_sizes": pa.array([[10, 4], []], type=pa.list_(pa.uint64())),
            "bid_counts": pa.array([[2, 1], []], type=pa.list_(pa.uint32())),
            "ask_prices": pa.array([[64_810_000_000], [64_790_000_000]], type=levels),
            "ask_sizes": pa.array([[3], [4]], type=pa.list_(pa.uint64())),
            "ask_counts": pa.array([[1], [1]], type=pa.list_(pa.uint32())),
        },
    )
    snapshot = clickhouse_client.query(
        "SELECT bid_prices, bid_sizes, ask_prices, depth FROM book_snapshots FINAL "
        "WHERE publisher_id = 1"
    ).result_rows
    assert snapshot == [([64_800_000_000, 64_790_000_000], [10, 4], [64_810_000_000], 10)]


@pytest.mark.integration
def test_quality_columns_migration_keeps_the_counters_of_existing_rows(
    clickhouse_client: Client,
) -> None:
    before, after = [m for m in migrations() if m.version < 3], migrations()
    apply_schema(clickhouse_client, before)
    for table in ("bbo", "book_snapshots"):
        clickhouse_client.command(
            f"INSERT INTO {table} (instrument_id, publisher_id, ts_event, ts_recv, quality) "
            "VALUES (1, 1, 1, 1, map('cancel_unknown_order', 5, 'invalid_record', 2))"
        )
    apply_schema(clickhouse_client, after)
    for statement in after[-1].statements():  # twice, as two stages starting together may
        clickhouse_client.command(statement)
    for table in ("bbo", "book_snapshots"):
        (row,) = clickhouse_client.query(
            f"SELECT cancel_unknown_order, invalid_record, maybe_bad_book, quality FROM {table}"
        ).result_rows
        assert row[:3] == (5, 2, 0)
        assert row[3] == {name: {"cancel_unknown_order": 5, "invalid_record": 2}.get(name, 0)
                          for name in QUALITY_FIELDS}  # fmt: skip


@pytest.mark.integration
def test_insert_refuses_bad_columns(clickhouse_client: Client) -> None:
    apply_schema(clickhouse_client)
    with pytest.raises(MboError, match="unknown columns"):
        insert_columns(clickhouse_client, "mbo_records", {"no_such_column": np.zeros(1)})
    with pytest.raises(MboError, match="source_partition"):
        insert_columns(clickhouse_client, "mbo_records", {"source_partition": np.array([70_000])})
    with pytest.raises(MboError, match="differ in length"):
        insert_columns(
            clickhouse_client,
            "mbo_records",
            {"size": np.zeros(2, np.uint32), "flags": np.zeros(3, np.uint8)},
        )
    with pytest.raises(MboError, match="does not exist"):
        insert_columns(clickhouse_client, "no_such_table", {"x": np.zeros(1)})


def test_unreachable_server_is_a_readable_error() -> None:
    settings = make_settings(
        clickhouse={"url": f"http://127.0.0.1:{free_port()}", "connect_timeout_s": 2}
    )
    with pytest.raises(MboError, match=r"cannot open ClickHouse at http://127\.0\.0\.1:\d+ as"):
        connect(settings)
