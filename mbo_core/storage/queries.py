"""The example queries of docs/storage.md as SQL plus parameters, for the tests and the API.

Each function returns a `Query`; run it with `client.query(q.sql, parameters=q.parameters)`.
Conventions of the results: timestamps as integer nanoseconds since the epoch (exact, unlike
Python datetimes), prices as Int64 in 1e-9 units (`mbo_core.prices.format_price` makes the exact
decimal) except the bars' mid and spread, exact Decimals in price units; publisher_id 0 = the
consolidated book.

Runs: every query reads one run of the instrument's data (a replay, or one copy of a looped
replay: `run=(replay_id, replay_copy)`), by default its latest (`LATEST_RUN`), so replays and
loops of the same data never count twice.

Duplicates: a redelivered message inserts rows identical to the first copy, so "the latest row"
queries need no FINAL (the copies are the same row); counts and anything summed do use FINAL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The order of rows within an instrument: event time, then position in the source topic.
_LATEST_FIRST = "ts_event DESC, source_partition DESC, source_offset DESC, record_index DESC"
_KEY = "(ts_event, source_partition, source_offset, record_index)"
_AT = "fromUnixTimestamp64Nano({at_ns:Int64}, 'UTC')"


@dataclass(frozen=True)
class Query:
    sql: str
    parameters: dict[str, Any] = field(default_factory=dict)


#: A run of the data: (replay_id, replay_copy), one copy of one replay (docs/storage.md, "Runs").
Run = tuple[str, int]
#: The latest run of rows: the run of the newest in the source topic (one instrument's records
#: live in one partition, in order).
_NEWEST_RUN = "argMax((replay_id, replay_copy), (source_partition, source_offset))"
#: The latest run of an instrument, as a subquery.
LATEST_RUN = f"(SELECT {_NEWEST_RUN} FROM bbo WHERE instrument_id = {{instrument_id:UInt32}})"


def _filters(
    instrument_id: int, publisher_id: int | None, since_ns: int | None, run: Run | None = None
) -> tuple[str, dict[str, Any]]:
    """The WHERE clause of one instrument (and publisher, and time bound) in one run: `run`,
    or the instrument's latest when None."""
    where = ["instrument_id = {instrument_id:UInt32}"]
    parameters: dict[str, Any] = {"instrument_id": instrument_id}
    if run is None:
        where.append(f"(replay_id, replay_copy) = {LATEST_RUN}")
    else:
        where.append("replay_id = {replay_id:String} AND replay_copy = {replay_copy:UInt32}")
        parameters.update(replay_id=run[0], replay_copy=run[1])
    if publisher_id is not None:
        where.append("publisher_id = {publisher_id:UInt16}")
        parameters["publisher_id"] = publisher_id
    if since_ns is not None:
        # A lower bound lets ClickHouse skip whole day partitions and granules.
        where.append("ts_event >= fromUnixTimestamp64Nano({since_ns:Int64}, 'UTC')")
        parameters["since_ns"] = since_ns
    return " AND ".join(where), parameters


def bbo_at(
    instrument_id: int,
    at_ns: int,
    *,
    publisher_id: int | None = None,
    since_ns: int | None = None,
    run: Run | None = None,
) -> Query:
    """The best bid and offer in force at `at_ns`: per publisher (0 = consolidated), the last
    bbo row with ts_event <= at_ns. since_ns: look no further back than this (faster)."""
    where, parameters = _filters(instrument_id, publisher_id, since_ns, run)
    sql = f"""
SELECT instrument_id, publisher_id, symbol,
       toUnixTimestamp64Nano(ts_event) AS ts_event_ns, toUnixTimestamp64Nano(ts_recv) AS ts_recv_ns,
       sequence, bid_price, bid_size, bid_count, ask_price, ask_size, ask_count,
       crossed, locked, quality
FROM bbo
WHERE {where} AND ts_event <= {_AT}
ORDER BY publisher_id, {_LATEST_FIRST}
LIMIT 1 BY publisher_id"""
    return Query(sql.strip(), {**parameters, "at_ns": at_ns})


def depth_at(
    instrument_id: int,
    at_ns: int,
    *,
    publisher_id: int | None = None,
    since_ns: int | None = None,
    run: Run | None = None,
) -> Query:
    """The depth (levels, best first) as of `at_ns`: per publisher, the last snapshot with
    ts_event <= at_ns. Snapshots are conflated (MBO_PIPELINE__SNAPSHOT_INTERVAL_MS), so this is
    the book at that snapshot's ts_event, which the row carries."""
    where, parameters = _filters(instrument_id, publisher_id, since_ns, run)
    sql = f"""
SELECT instrument_id, publisher_id, symbol,
       toUnixTimestamp64Nano(ts_event) AS ts_event_ns, toUnixTimestamp64Nano(ts_recv) AS ts_recv_ns,
       sequence, depth, bid_prices, bid_sizes, bid_counts, ask_prices, ask_sizes, ask_counts,
       crossed, locked, quality
FROM book_snapshots
WHERE {where} AND ts_event <= {_AT}
ORDER BY publisher_id, {_LATEST_FIRST}
LIMIT 1 BY publisher_id"""
    return Query(sql.strip(), {**parameters, "at_ns": at_ns})


def mid_bars(
    instrument_id: int,
    start_ns: int,
    end_ns: int,
    *,
    step_ns: int = 1_000_000_000,
    publisher_id: int | None = None,
    limit: int | None = None,
    run: Run | None = None,
) -> Query:
    """Bars of `step_ns` of the mid price over [start_ns, end_ns), per publisher: open, high,
    low, close of the mid over the BBO changes in the bar where both sides were present, the
    last spread, and the number of BBO changes. Mid and spread are exact Decimals in price units
    (Decimal(38, 10): half a 1e-9 tick needs a tenth decimal; Decimal(38, 9)), computed from the
    integer prices without floats. Bars without a change are absent. `limit`: at most that many
    bars."""
    where, parameters = _filters(instrument_id, publisher_id, None, run)
    sql = f"""
SELECT publisher_id,
       intDiv(toUnixTimestamp64Nano(ts_event), {{step_ns:Int64}}) * {{step_ns:Int64}} AS bar_ns,
       argMin(mid, key) AS open, max(mid) AS high, min(mid) AS low, argMax(mid, key) AS close,
       argMax(spread, key) AS last_spread, count() AS changes
FROM (
    SELECT publisher_id, ts_event, {_KEY} AS key,
           -- Exact: a Decimal divided by an integer keeps its scale (10 and 9 decimals).
           (toDecimal128(assumeNotNull(bid_price), 10) + toDecimal128(assumeNotNull(ask_price), 10))
               / 2000000000 AS mid,
           toDecimal128(assumeNotNull(ask_price) - assumeNotNull(bid_price), 9) / 1000000000
               AS spread
    FROM bbo FINAL
    WHERE {where}
      AND ts_event >= fromUnixTimestamp64Nano({{start_ns:Int64}}, 'UTC')
      AND ts_event < fromUnixTimestamp64Nano({{end_ns:Int64}}, 'UTC')
      AND bid_price IS NOT NULL AND ask_price IS NOT NULL
)
GROUP BY publisher_id, bar_ns
ORDER BY publisher_id, bar_ns"""
    parameters.update(start_ns=start_ns, end_ns=end_ns, step_ns=step_ns)
    if limit is not None:
        sql += "\nLIMIT {limit:UInt32}"
        parameters["limit"] = limit
    return Query(sql.strip(), parameters)


def mid_bars_1s(
    instrument_id: int,
    start_ns: int,
    end_ns: int,
    *,
    publisher_id: int | None = None,
    run: Run | None = None,
) -> Query:
    """1-second bars of the mid price (see mid_bars)."""
    return mid_bars(instrument_id, start_ns, end_ns, publisher_id=publisher_id, run=run)


def quality_over_time(
    instrument_id: int,
    start_ns: int,
    end_ns: int,
    *,
    interval_s: int = 60,
    publisher_id: int | None = None,
    run: Run | None = None,
) -> Query:
    """Data-quality counters over time: per publisher and interval, the counters' values at the
    end of the interval (they only grow, so the maximum) from the BBO events."""
    where, parameters = _filters(instrument_id, publisher_id, None, run)
    sql = f"""
SELECT publisher_id,
       intDiv(toUnixTimestamp64Nano(ts_event), {{step_ns:Int64}}) * {{step_ns:Int64}} AS bucket_ns,
       maxMap(quality) AS quality
FROM bbo
WHERE {where}
  AND ts_event >= fromUnixTimestamp64Nano({{start_ns:Int64}}, 'UTC')
  AND ts_event < fromUnixTimestamp64Nano({{end_ns:Int64}}, 'UTC')
GROUP BY publisher_id, bucket_ns
ORDER BY publisher_id, bucket_ns"""
    return Query(
        sql.strip(),
        {**parameters, "start_ns": start_ns, "end_ns": end_ns, "step_ns": interval_s * 10**9},
    )


def latest_run_of(instrument_id: int, replay_id: str | None = None) -> Query:
    """The instrument's latest run (of replay `replay_id`: its latest copy) and the BBO rows it
    was chosen among (0: no run)."""
    where = "instrument_id = {instrument_id:UInt32}"
    parameters: dict[str, Any] = {"instrument_id": instrument_id}
    if replay_id is not None:
        where += " AND replay_id = {replay_id:String}"
        parameters["replay_id"] = replay_id
    return Query(f"SELECT {_NEWEST_RUN} AS run, count() AS rows FROM bbo WHERE {where}", parameters)


def runs_of(instrument_id: int) -> Query:
    """The runs an instrument's BBO history holds, newest first: replay_id, replay_copy, the
    event-time range and BBO rows (duplicates collapsed) of each."""
    sql = """
SELECT replay_id, replay_copy,
       toUnixTimestamp64Nano(min(ts_event)) AS first_ts_event_ns,
       toUnixTimestamp64Nano(max(ts_event)) AS last_ts_event_ns,
       count() AS bbo_rows, max((source_partition, source_offset)) AS newest
FROM bbo FINAL
WHERE instrument_id = {instrument_id:UInt32}
GROUP BY replay_id, replay_copy
ORDER BY newest DESC"""
    return Query(sql.strip(), {"instrument_id": instrument_id})


TABLE_NAMES = ("mbo_records", "bbo", "book_snapshots")


def row_counts() -> Query:
    """Rows per table with duplicates collapsed (FINAL): (table, rows)."""
    sql = "\nUNION ALL\n".join(
        f"SELECT '{table}' AS table, count() AS rows FROM {table} FINAL" for table in TABLE_NAMES
    )
    return Query(sql)
