"""The documented example queries (sink.queries) on known data in a real ClickHouse."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from mbo_core.clickhouse import apply_schema
from mbo_core.prices import format_price
from mbo_core.schemas import BBO_SCHEMA, SNAPSHOT_SCHEMA
from sink import queries
from sink.decode import EventRows, Kind, decode_message
from sink.writer import insert_events

pytestmark = pytest.mark.integration

INSTRUMENT = 7
T0 = 1_761_004_800_000_000_000  # 2025-10-21T00:00:00Z
MS = 1_000_000
C = 10_000_000  # one cent in 1e-9 units
P = 64_000_000_000  # 64.00


# (ms after T0, publisher (None = consolidated), source offset, record index, bid, ask, cancels)
BBO_ROWS: list[tuple[int, int | None, int, int, int | None, int | None, int]] = [
    (100, 1, 10, 0, P + 80 * C, P + 82 * C, 0),
    (200, None, 10, 0, P + 80 * C, P + 82 * C, 0),
    (500, 1, 11, 3, P + 81 * C, P + 82 * C, 1),
    (900, 1, 12, 0, P + 79 * C, P + 81 * C, 1),
    (1200, 1, 12, 5, None, P + 83 * C, 2),  # no bid: no mid
    (1700, 1, 13, 0, P + 82 * C, P + 84 * C, 4),
    (3000, 1, 14, 1, P + 82 * C, P + 84 * C, 4),  # two changes at one ts_event: source order
    (3000, 1, 14, 2, P + 82 * C, P + 83 * C, 5),
]


def _price(value: int | None) -> str | None:
    return None if value is None else format_price(value)


def _bbo_messages() -> list[bytes]:
    """One bbo message per source offset, as the processor would publish them."""
    messages = []
    for offset in sorted({row[2] for row in BBO_ROWS}):
        rows = [row for row in BBO_ROWS if row[2] == offset]
        payload: dict[str, Any] = {
            "schema": BBO_SCHEMA,
            "instrument_id": INSTRUMENT,
            "symbol": "TEST",
            "source": {"partition": 0, "offset": offset},
            "sent_ns": 1,
            "publisher_id": [r[1] for r in rows],
            "record_index": [r[3] for r in rows],
            "ts_event": [T0 + r[0] * MS for r in rows],
            "ts_recv": [T0 + r[0] * MS + 5 for r in rows],
            "sequence": [None if r[1] is None else 100 + r[0] for r in rows],
            "bid_price": [_price(r[4]) for r in rows],
            "bid_size": [1] * len(rows),
            "bid_count": [1] * len(rows),
            "ask_price": [_price(r[5]) for r in rows],
            "ask_size": [2] * len(rows),
            "ask_count": [1] * len(rows),
            "crossed": [False] * len(rows),
            "locked": [False] * len(rows),
            "quality": {
                "cancel_unknown_order": [r[6] for r in rows],
                "add_existing_order": [0] * len(rows),
            },
        }
        messages.append(orjson.dumps(payload))
    return messages


def _snapshot(ms: int, offset: int, bid: int) -> bytes:
    book = {
        "instrument_id": INSTRUMENT,
        "publisher_id": 1,
        "symbol": "TEST",
        "ts_event": T0 + ms * MS,
        "ts_recv": T0 + ms * MS + 5,
        "sequence": 100 + ms,
        "bids": [
            {"price": format_price(bid), "size": 1, "count": 1},
            {"price": format_price(bid - C), "size": 5, "count": 3},
        ],
        "asks": [{"price": format_price(bid + 2 * C), "size": 2, "count": 1}],
        "crossed": False,
        "locked": False,
        "quality": {"cancel_unknown_order": 1},
        "record_index": 0,
        "final": False,
    }
    return orjson.dumps(
        {
            "schema": SNAPSHOT_SCHEMA,
            "instrument_id": INSTRUMENT,
            "symbol": "TEST",
            "source": {"partition": 0, "offset": offset},
            "sent_ns": 1,
            "depth": 10,
            "snapshots": [book],
        }
    )


@pytest.fixture
def loaded(clickhouse_client: Client) -> Client:
    apply_schema(clickhouse_client)
    bbo = [decode_message(Kind.BBO, 0, i, m, []) for i, m in enumerate(_bbo_messages())]
    snapshots = [
        decode_message(Kind.SNAPSHOT, 0, 0, _snapshot(500, 11, P + 81 * C), []),
        decode_message(Kind.SNAPSHOT, 0, 1, _snapshot(2000, 13, P + 82 * C), []),
    ]
    for _ in range(2):  # every message delivered twice: results must not change
        insert_events(clickhouse_client, [b for b in bbo if isinstance(b, EventRows)])
        insert_events(clickhouse_client, [s for s in snapshots if isinstance(s, EventRows)])
    return clickhouse_client


def _run(client: Client, query: queries.Query) -> list[dict[str, Any]]:
    result = client.query(query.sql, parameters=query.parameters)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def test_row_counts_collapse_duplicates(loaded: Client) -> None:
    counts = {row["table"]: row["rows"] for row in _run(loaded, queries.row_counts())}
    assert counts == {"mbo_records": 0, "bbo": len(BBO_ROWS), "book_snapshots": 2}
    assert loaded.query("SELECT count() FROM bbo").result_rows[0][0] == 2 * len(BBO_ROWS)


def _bbo_summary(rows: list[dict[str, Any]]) -> list[tuple[int, int, int | None, int | None]]:
    return [(r["publisher_id"], r["ts_event_ns"], r["bid_price"], r["ask_price"]) for r in rows]


def test_bbo_at_a_time(loaded: Client) -> None:
    at = queries.bbo_at
    assert _run(loaded, at(INSTRUMENT, T0 + 99 * MS)) == []  # before the first change
    assert _bbo_summary(_run(loaded, at(INSTRUMENT, T0 + 1000 * MS))) == [
        (0, T0 + 200 * MS, P + 80 * C, P + 82 * C),
        (1, T0 + 900 * MS, P + 79 * C, P + 81 * C),
    ]
    # Exactly at a change's ts_event it is in force; an empty bid side is NULL.
    assert _bbo_summary(_run(loaded, at(INSTRUMENT, T0 + 1200 * MS, publisher_id=1))) == [
        (1, T0 + 1200 * MS, None, P + 83 * C)
    ]
    # Two changes at one ts_event: the later one in the source wins.
    latest = _run(loaded, at(INSTRUMENT, T0 + 5000 * MS, publisher_id=1))
    assert _bbo_summary(latest) == [(1, T0 + 3000 * MS, P + 82 * C, P + 83 * C)]
    assert latest[0]["quality"] == {"cancel_unknown_order": 5, "add_existing_order": 0}
    assert latest[0]["sequence"] == 3100
    assert latest[0]["symbol"] == "TEST"
    bounded = at(INSTRUMENT, T0 + 1000 * MS, since_ns=T0 + 150 * MS)
    assert [r["publisher_id"] for r in _run(loaded, bounded)] == [0, 1]
    assert _run(loaded, at(INSTRUMENT + 1, T0 + 5000 * MS)) == []


def test_depth_at_a_time(loaded: Client) -> None:
    rows = _run(loaded, queries.depth_at(INSTRUMENT, T0 + 1999 * MS))
    assert len(rows) == 1
    row = rows[0]
    assert row["ts_event_ns"] == T0 + 500 * MS
    assert row["bid_prices"] == [P + 81 * C, P + 80 * C]
    assert row["bid_sizes"] == [1, 5]
    assert row["bid_counts"] == [1, 3]
    assert row["ask_prices"] == [P + 83 * C]
    assert row["depth"] == 10
    later = _run(loaded, queries.depth_at(INSTRUMENT, T0 + 2000 * MS, publisher_id=1))
    assert [r["ts_event_ns"] for r in later] == [T0 + 2000 * MS]
    assert _run(loaded, queries.depth_at(INSTRUMENT, T0 + 499 * MS)) == []


def _mid(bid: int, ask: int) -> float:
    return (bid + ask) / 2e9


def test_one_second_mid_bars(loaded: Client) -> None:
    rows = _run(loaded, queries.mid_bars_1s(INSTRUMENT, T0, T0 + 4000 * MS, publisher_id=1))
    bars = [
        (r["bar_ns"], r["open"], r["high"], r["low"], r["close"], r["last_spread"], r["changes"])
        for r in rows
    ]
    first = [
        _mid(P + 80 * C, P + 82 * C),
        _mid(P + 81 * C, P + 82 * C),
        _mid(P + 79 * C, P + 81 * C),
    ]
    assert bars == [
        (T0, first[0], max(first), min(first), first[2], 2 * C, 3),
        # 1.2 s has no bid (no mid); the bar is the 1.7 s change alone.
        (T0 + 1000 * MS, *[_mid(P + 82 * C, P + 84 * C)] * 4, 2 * C, 1),
        (
            T0 + 3000 * MS,
            _mid(P + 82 * C, P + 84 * C),
            _mid(P + 82 * C, P + 84 * C),
            _mid(P + 82 * C, P + 83 * C),
            _mid(P + 82 * C, P + 83 * C),
            C,
            2,
        ),
    ]
    both = _run(loaded, queries.mid_bars_1s(INSTRUMENT, T0, T0 + 1000 * MS))
    assert [(r["publisher_id"], r["changes"]) for r in both] == [(0, 1), (1, 3)]


def test_data_quality_over_time(loaded: Client) -> None:
    query = queries.quality_over_time(INSTRUMENT, T0, T0 + 4000 * MS, interval_s=1, publisher_id=1)
    rows = [(r["bucket_ns"], r["quality"]["cancel_unknown_order"]) for r in _run(loaded, query)]
    assert rows == [(T0, 1), (T0 + 1000 * MS, 4), (T0 + 3000 * MS, 5)]
