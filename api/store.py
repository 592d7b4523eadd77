"""History from ClickHouse: the book as of a time, BBO rows and mid/spread bars over a range.

The ClickHouse client is synchronous (and with chDB shared with the sink in the same process):
`Store` runs every query in a worker thread, one at a time, and turns backend failures into
BackendUnavailableError so the app answers 503 naming ClickHouse, never 500.

Publisher 0 is the consolidated book in ClickHouse and null in JSON. Without a publisher_id the
default book is used, as for the live routes: the consolidated one if the instrument has
several publishers, else its only one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import numpy as np
from clickhouse_connect.driver.client import Client

from mbo_core.prices import format_price
from mbo_core.schemas import BookJson, levels_json
from mbo_core.settings import Settings
from mbo_core.storage.queries import Query, Run, depth_at, latest_run_of, runs_of
from mbo_core.timestamps import iso_ns

log = logging.getLogger("api.store")

T = TypeVar("T")
_IN_RANGE = (
    "ts_event >= fromUnixTimestamp64Nano({start_ns:Int64}, 'UTC') "
    "AND ts_event < fromUnixTimestamp64Nano({end_ns:Int64}, 'UTC')"
)


class BackendUnavailableError(Exception):
    """A backend (kafka or clickhouse) could not answer."""

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(message)
        self.backend = backend
        self.message = message


class Store:
    """The API's ClickHouse access: connects lazily (and again after a failure)."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.settings = settings
        self.client = client
        self.owns_client = client is None
        #: Held by every call on the client, the sink's too when it shares it (LockedClient).
        self.lock = threading.Lock()

    def _client(self) -> Client:
        if self.client is None:
            from mbo_core.storage.clickhouse import connect  # noqa: PLC0415 (chDB loads slowly)

            self.client = connect(self.settings)
        return self.client

    def shared_client(self) -> Client:
        """The client, connected now (raises MboError if ClickHouse cannot be opened)."""
        with self.lock:
            return self._client()

    def _run(self, work: Callable[[Client], T]) -> T:
        with self.lock:
            try:
                return work(self._client())
            except Exception as exc:
                # Anything the driver raises (connection refused, server error, chDB error)
                # means the backend cannot answer this: a 503, not a 500.
                message = " ".join(str(exc).split())[:300]
                log.warning("ClickHouse query failed: %s", message)
                if self.owns_client and self.client is not None and _is_connection_error(exc):
                    self.close()
                raise BackendUnavailableError("clickhouse", message) from None

    async def call(self, work: Callable[[Client], T]) -> T:
        return await asyncio.to_thread(self._run, work)

    async def rows(self, query: Query) -> list[dict[str, Any]]:
        def work(client: Client) -> list[dict[str, Any]]:
            result = client.query(query.sql, parameters=query.parameters)
            names = result.column_names
            return [dict(zip(names, row, strict=True)) for row in result.result_rows]

        return await self.call(work)

    async def ping(self) -> None:
        await self.call(lambda client: client.command("SELECT 1"))

    def close(self) -> None:
        if self.owns_client and self.client is not None:
            client, self.client = self.client, None
            try:
                client.close()
            except Exception as exc:  # closing a broken client must not hide the first error
                log.debug("closing the ClickHouse client: %s", exc)


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or "connect" in type(exc).__name__.lower()


# ----------------------------------------------------------------------- queries


async def latest_run(store: Store, instrument_id: int, replay_id: str | None = None) -> Run | None:
    """The instrument's latest run (of replay `replay_id`: its latest copy); None if it has
    none."""
    rows = await store.rows(latest_run_of(instrument_id, replay_id))
    if not rows or not rows[0]["rows"]:
        return None
    replay, copy = rows[0]["run"]
    return str(replay), int(copy)


def run_json(run: Run) -> dict[str, Any]:
    return {"replay_id": run[0], "replay_copy": run[1]}


async def runs(store: Store, instrument_id: int) -> list[dict[str, Any]]:
    """The instrument's runs, newest first (api.models.RunSummary)."""
    rows = await store.rows(runs_of(instrument_id))
    return [
        {
            **run_json((str(row["replay_id"]), int(row["replay_copy"]))),
            "first_ts_event": int(row["first_ts_event_ns"]),
            "first_ts_event_iso": iso_ns(int(row["first_ts_event_ns"])),
            "last_ts_event": int(row["last_ts_event_ns"]),
            "last_ts_event_iso": iso_ns(int(row["last_ts_event_ns"])),
            "bbo_rows": int(row["bbo_rows"]),
            "latest": i == 0,
        }
        for i, row in enumerate(rows)
    ]


async def publishers_of(store: Store, instrument_id: int, run: Run) -> list[int]:
    """Publisher ids (0 = consolidated) with BBO rows for the instrument in the run; [] if
    none."""
    rows = await store.rows(
        Query(
            "SELECT DISTINCT publisher_id FROM bbo WHERE instrument_id = {i:UInt32} "
            "AND replay_id = {r:String} AND replay_copy = {c:UInt32} ORDER BY publisher_id",
            {"i": instrument_id, "r": run[0], "c": run[1]},
        )
    )
    return [int(row["publisher_id"]) for row in rows]


def default_publisher(publishers: list[int]) -> int | None:
    """ClickHouse publisher id of the default book: 0 (consolidated) if present, else the
    only/first one; None if there is nothing."""
    if not publishers:
        return None
    return 0 if 0 in publishers else publishers[0]


def _levels(prices: list[int], sizes: list[int], counts: list[int], depth: int) -> list[Any]:
    return levels_json(np.array([prices, sizes, counts], dtype=np.int64).T[:depth])


def book_from_row(row: dict[str, Any], depth: int) -> BookJson:
    """A book_snapshots row (mbo_core.storage.queries.depth_at) as the API's book JSON (that of
    the live book, api.state)."""
    ts_event, ts_recv = int(row["ts_event_ns"]), int(row["ts_recv_ns"])
    return {
        "instrument_id": int(row["instrument_id"]),
        "publisher_id": int(row["publisher_id"]) or None,
        "symbol": row["symbol"] or None,
        "ts_event": ts_event,
        "ts_event_iso": iso_ns(ts_event),
        "ts_recv": ts_recv,
        "ts_recv_iso": iso_ns(ts_recv),
        "sequence": row["sequence"],
        "bids": _levels(row["bid_prices"], row["bid_sizes"], row["bid_counts"], depth),
        "asks": _levels(row["ask_prices"], row["ask_sizes"], row["ask_counts"], depth),
        "crossed": bool(row["crossed"]),
        "locked": bool(row["locked"]),
        "quality": {str(k): int(v) for k, v in dict(row["quality"]).items()},
    }


async def book_at(
    store: Store, instrument_id: int, at_ns: int, depth: int, publisher: int, run: Run
) -> BookJson | None:
    rows = await store.rows(depth_at(instrument_id, at_ns, publisher_id=publisher, run=run))
    return book_from_row(rows[0], depth) if rows else None


def _side(price: int | None, size: int, count: int) -> dict[str, Any] | None:
    if price is None:
        return None
    return {"price": format_price(int(price)), "size": int(size), "count": int(count)}


def bbo_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A bbo row as the API's BBO JSON (the shape of GET .../bbo)."""
    ts_event, ts_recv = int(row["ts_event_ns"]), int(row["ts_recv_ns"])
    return {
        "instrument_id": int(row["instrument_id"]),
        "publisher_id": int(row["publisher_id"]) or None,
        "symbol": row["symbol"] or None,
        "ts_event": ts_event,
        "ts_event_iso": iso_ns(ts_event),
        "ts_recv": ts_recv,
        "ts_recv_iso": iso_ns(ts_recv),
        "bid": _side(row["bid_price"], row["bid_size"], row["bid_count"]),
        "ask": _side(row["ask_price"], row["ask_size"], row["ask_count"]),
        "crossed": bool(row["crossed"]),
        "locked": bool(row["locked"]),
    }


#: Where a page of BBO rows ends: (ts_event ns, source_partition, source_offset, record_index)
#: of its last row, the rows' order (one publisher's rows never share it).
Cursor = tuple[int, int, int, int]


def bbo_rows_query(
    instrument_id: int,
    publisher: int,
    start_ns: int,
    end_ns: int,
    limit: int,
    run: Run,
    after: Cursor | None = None,
) -> Query:
    """BBO changes in [start_ns, end_ns), oldest first, after the `after` cursor, at most
    `limit`; duplicates from redelivery collapsed with FINAL. Each row carries its cursor."""
    page = (
        ""
        if after is None
        else "\n  AND (toUnixTimestamp64Nano(ts_event), source_partition, source_offset, "
        "record_index) > ({after_ts:Int64}, {after_partition:UInt16}, {after_offset:UInt64}, "
        "{after_index:UInt32})"
    )
    sql = f"""
SELECT instrument_id, publisher_id, symbol,
       toUnixTimestamp64Nano(ts_event) AS ts_event_ns, toUnixTimestamp64Nano(ts_recv) AS ts_recv_ns,
       bid_price, bid_size, bid_count, ask_price, ask_size, ask_count, crossed, locked,
       source_partition, source_offset, record_index
FROM bbo FINAL
WHERE instrument_id = {{instrument_id:UInt32}} AND publisher_id = {{publisher_id:UInt16}}
  AND replay_id = {{replay_id:String}} AND replay_copy = {{replay_copy:UInt32}}
  AND {_IN_RANGE}{page}
ORDER BY ts_event, source_partition, source_offset, record_index
LIMIT {{limit:UInt32}}"""
    parameters: dict[str, Any] = {
        "instrument_id": instrument_id,
        "publisher_id": publisher,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "limit": limit,
        "replay_id": run[0],
        "replay_copy": run[1],
    }
    if after is not None:
        parameters.update(
            after_ts=after[0], after_partition=after[1], after_offset=after[2], after_index=after[3]
        )
    return Query(sql.strip(), parameters)


def row_cursor(row: dict[str, Any]) -> Cursor:
    return (
        int(row["ts_event_ns"]),
        int(row["source_partition"]),
        int(row["source_offset"]),
        int(row["record_index"]),
    )


def bar_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row of mbo_core.storage.queries.mid_bars as the API's bar: mid and spread as exact
    decimal strings in price units, as every price of the API."""
    t = int(row["bar_ns"])
    return {
        "t": t,
        "t_iso": iso_ns(t),
        "open": format_decimal(row["open"]),
        "high": format_decimal(row["high"]),
        "low": format_decimal(row["low"]),
        "close": format_decimal(row["close"]),
        "spread": format_decimal(row["last_spread"]),
        "changes": int(row["changes"]),
    }


def format_decimal(value: Decimal) -> str:
    """A ClickHouse Decimal as the API's price text: exact, no exponent, no trailing zeros
    (Decimal("64.8150000000") -> "64.815", the text format_price gives a price)."""
    text = format(value, "f")  # exact: formatting a Decimal uses no context precision
    if "." in text:
        text = text.rstrip("0").removesuffix(".")
    return "0" if text == "-0" else text
