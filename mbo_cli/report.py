"""The figures of a drained `mbo run`: counts, rows, throughput, latency."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from mbo_core.kafka.dead_letters import read_dead_letters
from mbo_core.latency_log import read_stamps, run_latency_dir
from mbo_core.settings import Settings

TABLES = ("mbo_records", "bbo", "book_snapshots")


def build_report(
    settings: Settings,
    *,
    run_dir: Path,
    started: float,
    drained_at: float,
    sink_metrics: str,
    restarts: dict[str, int],
    counts: tuple[dict[str, int], int] | None = None,
) -> dict[str, Any]:
    """The report; `counts` (rows per table, events) as counted while the stages still ran
    (running_counts), else counted now."""
    producer = _producer_summary(run_dir)
    rows, events = counts if counts is not None else _clickhouse_counts(settings)
    dead_letters = asyncio.run(read_dead_letters(settings)).summary()
    event_latency = _event_latencies(run_dir)
    # From the first record sent (start-up of the processes is not the pipeline's throughput).
    first_sent = producer.get("first_sent_ns")
    begin = first_sent / 1e9 if first_sent else started
    seconds = max(drained_at - begin, 1e-9)
    # A producer restarted mid-replay resumed it: its summary counts what it sent itself.
    records = int(
        producer.get("records_sent", rows["mbo_records"]) + producer.get("records_already_sent", 0)
    )
    return {
        "records": records,
        "events": events,
        "rows": rows,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds),
        "producer": producer,
        "latency_ms": {
            "send_to_event": event_latency,
            "send_to_clickhouse": _histogram_quantiles(sink_metrics, stage="sink"),
        },
        "restarts": restarts,
        # Malformed messages the consumers refused (their good neighbours are all in the rows).
        "dead_letters": dead_letters,
    }


def _producer_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "producer.json"
    if not path.exists():
        return {}
    summary: dict[str, Any] = json.loads(path.read_text())
    return summary


#: Rows per table and events (records flagged F_LAST), exact (FINAL), in one row; the records
#: and their events in one scan (two scalar subqueries read mbo_records FINAL twice).
COUNTS_QUERY = "SELECT * FROM " + " CROSS JOIN ".join(
    [
        "(SELECT count() AS mbo_records, countIf(bitAnd(flags, 128) != 0) AS events "
        "FROM mbo_records FINAL) AS records"
    ]
    + [
        f"(SELECT count() AS {table} FROM {table} FINAL) AS {table}_count"
        for table in TABLES
        if table != "mbo_records"
    ]
)


def running_counts(settings: Settings, api_base: str) -> tuple[dict[str, int], int] | None:
    """The counts asked of the running API that holds the embedded chDB (before the stages
    stop): opening chDB again in `mbo run` after they stopped cost ~0.5 CPU-s of imports and
    table loading. None if the API does not answer (counted after the stop instead)."""
    from mbo_cli.sql import rows_through_api  # noqa: PLC0415

    rows = rows_through_api(settings, api_base, COUNTS_QUERY)
    if not rows:
        return None
    return _split_counts({name: int(value) for name, value in rows[0].items()})


def _clickhouse_counts(settings: Settings) -> tuple[dict[str, int], int]:
    from mbo_core.storage.clickhouse import connect  # noqa: PLC0415

    client = connect(settings)
    try:
        result = client.query(COUNTS_QUERY)
        row = dict(zip(result.column_names, result.result_rows[0], strict=True))
    finally:
        client.close()
    return _split_counts({name: int(value) for name, value in row.items()})


def _split_counts(row: dict[str, int]) -> tuple[dict[str, int], int]:
    return {table: row[table] for table in TABLES}, row["events"]


#: The report also gives the latencies of what was sent after this long: `mbo run` boots a
#: fresh broker, whose produce and fetch paths run cold (interpreted, then compiled) for about
#: the first second, with latencies of 15-70 ms that a running broker does not have.
WARM_AFTER_S = 1.0


def _event_latencies(run_dir: Path) -> dict[str, Any]:
    """Exact send -> publish latency of every BBO and snapshot message (ms), from the stamps
    the processors logged as they published (each message of a worker killed with -9 within
    its last second may be missing); and the same for the messages sent after the first
    WARM_AFTER_S of the replay."""
    stamps = read_stamps(run_latency_dir(run_dir))
    if not len(stamps):
        return {"count": 0}
    sent = stamps[:, 0]
    values = (stamps[:, 1] - sent) / 1e6
    figures: dict[str, Any] = _quantiles(values)
    figures["after_first_second"] = _quantiles(values[sent >= sent.min() + WARM_AFTER_S * 1e9])
    return figures


def _quantiles(values: np.ndarray) -> dict[str, float | int]:
    if not len(values):
        return {"count": 0}
    return {
        "count": len(values),
        "p50": round(float(np.percentile(values, 50)), 3),
        "p99": round(float(np.percentile(values, 99)), 3),
        "max": round(float(values.max()), 3),
    }


def _histogram_quantiles(metrics_text: str, *, stage: str) -> dict[str, float | int | str]:
    """p50/p99 (ms) of mbo_end_to_end_latency_seconds for a stage, from its buckets: each is the
    upper bound of the bucket the quantile falls in."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "mbo_end_to_end_latency_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("stage") == stage:
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    if not buckets or max(buckets.values()) == 0:
        return {"count": 0}
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]

    def quantile(q: float) -> float:
        for bound in bounds:
            if buckets[bound] >= q * total:
                return bound * 1000
        return float("inf")

    return {
        "count": int(total),
        "p50_le": quantile(0.5),
        "p99_le": quantile(0.99),
        "method": "histogram bucket upper bounds",
    }
