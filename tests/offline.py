"""The offline truth of a replay: what ClickHouse must hold after the pipeline ran a file.

The same book publisher the processor uses, fed each instrument's whole stream in one process
without Kafka (its own tests check it against `mbo book`), gives the BBO rows and final books;
ClickHouse is read with `mbo sql` in a subprocess (chDB lets one process open a data directory).
Used by the end-to-end tests and the fault harness (bench/faults.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from book_processor.publishing import BookPublisher
from mbo_core.dbn import open_mbo
from mbo_core.prices import parse_price
from mbo_core.wire import records_headers
from tests.paths import MBO
from tests.published import bbo_rows, snapshot_rows

BBO_SQL = """
SELECT instrument_id, publisher_id, toUnixTimestamp64Nano(ts_event) AS ts_event,
       toUnixTimestamp64Nano(ts_recv) AS ts_recv, sequence, bid_price, bid_size, bid_count,
       ask_price, ask_size, ask_count, crossed, locked
FROM bbo FINAL
ORDER BY instrument_id, source_partition, source_offset, record_index, publisher_id = 0
"""
FINAL_SNAPSHOTS_SQL = """
SELECT instrument_id, publisher_id, bid_prices, bid_sizes, bid_counts,
       ask_prices, ask_sizes, ask_counts, crossed, locked
FROM book_snapshots FINAL
WHERE final
ORDER BY instrument_id, publisher_id
"""


def sql(data: Path, query: str) -> list[dict[str, Any]]:
    run = subprocess.run(
        [MBO, "sql", query, "--data-dir", str(data)],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return [orjson.loads(line) for line in run.stdout.splitlines()]


def offline(path: Path) -> tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]]:
    """BBO rows (ClickHouse shapes) and final books by (instrument, publisher or 0)."""
    records = np.concatenate(list(open_mbo(path).batches()))
    rows: list[tuple[Any, ...]] = []
    finals: dict[tuple[int, int], dict[str, Any]] = {}
    for instrument in np.unique(records["instrument_id"]).tolist():
        mine = records[records["instrument_id"] == instrument]
        publisher = BookPublisher(0, snapshot_interval_ns=10**18, snapshot_depth=10)
        out = publisher.process(0, str(instrument).encode(), mine.tobytes(),
                                records_headers(dataset="x", symbol=None, sent_ns=0,
                                                records=len(mine)))  # fmt: skip
        if out.bbo is not None:
            rows += [_clickhouse_row(instrument, row) for row in bbo_rows(out.bbo)]
        end = publisher.process(1, str(instrument).encode(), b"", [("end-of-stream", b"1")])
        assert end.snapshots is not None
        for snapshot in snapshot_rows(end.snapshots):
            finals[(instrument, snapshot["publisher_id"] or 0)] = snapshot
    return rows, finals


def _clickhouse_row(instrument: int, row: dict[str, Any]) -> tuple[Any, ...]:
    def px(text: str | None) -> int | None:
        return None if text is None else parse_price(text)

    return (instrument, row["publisher_id"] or 0, row["ts_event"], row["ts_recv"],
            row["sequence"], px(row["bid_price"]), row["bid_size"], row["bid_count"],
            px(row["ask_price"]), row["ask_size"], row["ask_count"], row["crossed"],
            row["locked"])  # fmt: skip


def stored_bbo(data: Path, run: tuple[str, int] | None = None) -> list[tuple[Any, ...]]:
    """The bbo table in source order, of every run or of one (replay_id, replay_copy)."""
    query = BBO_SQL
    if run is not None:
        replay_id, copy = run
        assert replay_id.replace("-", "").isalnum()
        query = BBO_SQL.replace(
            "FROM bbo FINAL",
            f"FROM bbo FINAL WHERE (replay_id, replay_copy) = ('{replay_id}', {copy})",
        )
    return [tuple(r.values()) for r in sql(data, query)]


def assert_final_books(data: Path, finals: dict[tuple[int, int], dict[str, Any]]) -> None:
    stored = {(r["instrument_id"], r["publisher_id"]): r for r in sql(data, FINAL_SNAPSHOTS_SQL)}
    assert set(stored) == set(finals)
    for key, book in finals.items():
        row = stored[key]
        for side in ("bid", "ask"):
            levels = book[f"{side}s"]
            assert row[f"{side}_prices"] == [parse_price(lv["price"]) for lv in levels]
            assert row[f"{side}_sizes"] == [lv["size"] for lv in levels]
            assert row[f"{side}_counts"] == [lv["count"] for lv in levels]
        assert (row["crossed"], row["locked"]) == (book["crossed"], book["locked"])


RECORDS_SQL = """
SELECT instrument_id, toUnixTimestamp64Nano(ts_recv) AS ts_recv, sequence, order_id, price,
       size, flags, CAST(action, 'Int8') AS action, CAST(side, 'Int8') AS side
FROM mbo_records FINAL
ORDER BY instrument_id, source_partition, source_offset, record_index
"""
_RECORD_FIELDS = ("ts_recv", "sequence", "order_id", "price", "size", "flags", "action", "side")


def record_differences(data: Path, path: Path) -> dict[str, Any]:
    """How the stored records differ from the file's (one copy): counts, and the instruments
    whose records are not exactly the file's, in order (a loss, a duplicate or a reordering)."""
    records = np.concatenate(list(open_mbo(path).batches()))
    stored = sql(data, RECORDS_SQL)
    by_instrument: dict[int, list[tuple[int, ...]]] = {}
    for row in stored:
        by_instrument.setdefault(row["instrument_id"], []).append(
            tuple(row[f] for f in _RECORD_FIELDS)
        )
    wrong = []
    for instrument in np.unique(records["instrument_id"]).tolist():
        mine = records[records["instrument_id"] == instrument]
        expected = list(zip(*(mine[f].tolist() for f in _RECORD_FIELDS), strict=True))
        if by_instrument.pop(instrument, []) != expected:
            wrong.append(instrument)
    return {
        "expected": len(records),
        "stored": len(stored),
        "lost": max(len(records) - len(stored), 0),
        "extra": max(len(stored) - len(records), 0),
        "instruments_not_exact": wrong + sorted(by_instrument),
    }
