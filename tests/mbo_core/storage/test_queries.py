"""The documented example queries (mbo_core.storage.queries) on known data in a real ClickHouse."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from clickhouse_connect.driver.client import Client

from mbo_core.prices import UNDEF_PRICE
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.records import MBO_DTYPE
from mbo_core.storage import queries
from mbo_core.storage.clickhouse import apply_schema
from mbo_core.wire import Encoded, EventContext, encode_bbo, encode_snapshots
from sink.decode import Decoded, EventRows, Kind, decode_message
from sink.writer import insert_events

pytestmark = pytest.mark.integration

INSTRUMENT = 7
T0 = 1_761_004_800_000_000_000  # 2025-10-21T00:00:00Z
MS = 1_000_000
C = 10_000_000  # one cent in 1e-9 units
P = 64_000_000_000  # 64.00
F_LAST = 128


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


def _side(price: int | None, size: int) -> list[int]:
    return [UNDEF_PRICE, 0, 0] if price is None else [price, size, 1]


def _closing(n: int) -> np.ndarray:
    """The F_LAST MBO records that closed n events (their fields are not stored in bbo)."""
    closing = np.zeros(n, dtype=MBO_DTYPE)
    closing["action"], closing["side"], closing["flags"] = ord("A"), ord("B"), F_LAST
    return closing


def _bbo_messages() -> list[Encoded]:
    """One bbo message per source offset, as the processor would publish them."""
    messages = []
    for offset in sorted({row[2] for row in BBO_ROWS}):
        rows = [row for row in BBO_ROWS if row[2] == offset]
        n = len(rows)
        consolidated = np.array([r[1] is None for r in rows])
        quality = np.zeros((n, len(QUALITY_FIELDS)), dtype=np.uint64)
        quality[:, QUALITY_FIELDS.index("cancel_unknown_order")] = [r[6] for r in rows]
        context = EventContext(
            INSTRUMENT, "TEST", source_partition=0, source_offset=offset, sent_ns=1
        )
        messages.append(
            encode_bbo(
                context,
                publisher_id=np.array([r[1] or 0 for r in rows], dtype=np.uint16),
                record_index=np.array([r[3] for r in rows], dtype=np.uint32),
                ts_event=np.array([T0 + r[0] * MS for r in rows], dtype=np.uint64),
                ts_recv=np.array([T0 + r[0] * MS + 5 for r in rows], dtype=np.uint64),
                sequence=np.array([100 + r[0] for r in rows], dtype=np.uint32),
                bbo=np.array([_side(r[4], 1) + _side(r[5], 2) for r in rows], dtype=np.int64),
                quality=quality,
                consolidated=consolidated,
                closing=_closing(n),
            )
        )
    return messages


def _snapshot(ms: int, offset: int, bid: int) -> Encoded:
    depth = 10
    bids = np.zeros((1, depth, 3), dtype=np.int64)
    asks = np.zeros((1, depth, 3), dtype=np.int64)
    bids[:, :, 0] = asks[:, :, 0] = UNDEF_PRICE
    bids[0, :2] = [(bid, 1, 1), (bid - C, 5, 3)]
    asks[0, 0] = (bid + 2 * C, 2, 1)
    quality = np.zeros((1, len(QUALITY_FIELDS)), dtype=np.uint64)
    quality[0, QUALITY_FIELDS.index("cancel_unknown_order")] = 1
    return encode_snapshots(
        EventContext(INSTRUMENT, "TEST", source_partition=0, source_offset=offset, sent_ns=1),
        depth=depth,
        publisher_id=np.array([1], dtype=np.uint16),
        record_index=np.array([0], dtype=np.uint32),
        ts_event=np.array([T0 + ms * MS], dtype=np.uint64),
        ts_recv=np.array([T0 + ms * MS + 5], dtype=np.uint64),
        sequence=np.array([100 + ms], dtype=np.uint32),
        bids=bids,
        asks=asks,
        quality=quality,
        consolidated=np.array([False]),
        final=np.array([False]),
    )


def _decoded(kind: Kind, offset: int, message: Encoded) -> Decoded:
    return decode_message(kind, 0, offset, message.value, message.headers)


@pytest.fixture
def loaded(clickhouse_client: Client) -> Client:
    apply_schema(clickhouse_client)
    bbo = [_decoded(Kind.BBO, i, m) for i, m in enumerate(_bbo_messages())]
    snapshots = [
        _decoded(Kind.SNAPSHOT, 0, _snapshot(500, 11, P + 81 * C)),
        _decoded(Kind.SNAPSHOT, 1, _snapshot(2000, 13, P + 82 * C)),
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
    # `quality` is the ALIAS Map of every counter column.
    assert latest[0]["quality"] == {**dict.fromkeys(QUALITY_FIELDS, 0), "cancel_unknown_order": 5}
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
    assert row["sequence"] == 600 and row["symbol"] == "TEST"
    assert row["quality"] == {**dict.fromkeys(QUALITY_FIELDS, 0), "cancel_unknown_order": 1}
    later = _run(loaded, queries.depth_at(INSTRUMENT, T0 + 2000 * MS, publisher_id=1))
    assert [r["ts_event_ns"] for r in later] == [T0 + 2000 * MS]
    assert _run(loaded, queries.depth_at(INSTRUMENT, T0 + 499 * MS)) == []


def _mid(bid: int, ask: int) -> Decimal:
    """The exact mid in price units (the query's Decimal, not a rounded float)."""
    return Decimal(bid + ask) / 2_000_000_000


def _price(units: int) -> Decimal:
    return Decimal(units) / 1_000_000_000


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
        (T0, first[0], max(first), min(first), first[2], _price(2 * C), 3),
        # 1.2 s has no bid (no mid); the bar is the 1.7 s change alone.
        (T0 + 1000 * MS, *[_mid(P + 82 * C, P + 84 * C)] * 4, _price(2 * C), 1),
        (
            T0 + 3000 * MS,
            _mid(P + 82 * C, P + 84 * C),
            _mid(P + 82 * C, P + 84 * C),
            _mid(P + 82 * C, P + 83 * C),
            _mid(P + 82 * C, P + 83 * C),
            _price(C),
            2,
        ),
    ]
    # Decimals, not floats: no mid or spread is rounded.
    assert all(isinstance(value, Decimal) for bar in bars for value in bar[1:6])
    both = _run(loaded, queries.mid_bars_1s(INSTRUMENT, T0, T0 + 1000 * MS))
    assert [(r["publisher_id"], r["changes"]) for r in both] == [(0, 1), (1, 3)]


def test_data_quality_over_time(loaded: Client) -> None:
    query = queries.quality_over_time(INSTRUMENT, T0, T0 + 4000 * MS, interval_s=1, publisher_id=1)
    rows = [(r["bucket_ns"], r["quality"]["cancel_unknown_order"]) for r in _run(loaded, query)]
    assert rows == [(T0, 1), (T0 + 1000 * MS, 4), (T0 + 3000 * MS, 5)]
