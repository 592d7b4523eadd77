"""mbo_cli.report without a run: the latency figures from the processors' stamps, and the row
counts from ClickHouse."""

from __future__ import annotations

from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from mbo_cli.report import COUNTS_QUERY, _event_latencies
from mbo_core.latency_log import LatencyLog, run_latency_dir
from mbo_core.storage.clickhouse import apply_schema
from sink.decode import RecordChunk
from sink.writer import insert_records
from tests.sink.wire import clx5_records


def test_latencies_of_every_message_and_of_those_sent_after_the_first_second(
    tmp_path: Path,
) -> None:
    assert _event_latencies(tmp_path) == {"count": 0}
    log = LatencyLog(run_latency_dir(tmp_path))
    start = 1_000_000_000_000
    log.add(start, start + 40_000_000)  # 40 ms, while the broker is cold
    log.add(start + 500_000_000, start + 520_000_000)  # 20 ms
    log.add(start + 1_500_000_000, start + 1_502_000_000)  # 2 ms
    log.add(start + 2_000_000_000, start + 2_004_000_000)  # 4 ms
    log.flush()
    figures = _event_latencies(tmp_path)
    assert (figures["count"], figures["max"]) == (4, 40.0)
    assert figures["after_first_second"]["count"] == 2
    assert figures["after_first_second"]["max"] == 4.0


@pytest.mark.integration
def test_counts_are_exact_rows_and_events_with_redeliveries_collapsed(
    clickhouse_client: Client,
) -> None:
    apply_schema(clickhouse_client)
    records = clx5_records()[:1000]
    chunk = RecordChunk(0, 7, "CLX5", 0, records)
    insert_records(clickhouse_client, [chunk])
    insert_records(clickhouse_client, [chunk])  # a redelivery: the same rows again
    result = clickhouse_client.query(COUNTS_QUERY)
    counts = dict(zip(result.column_names, result.result_rows[0], strict=True))
    events = int((records["flags"] & 128 != 0).sum())
    assert counts == {"mbo_records": 1000, "events": events, "bbo": 0, "book_snapshots": 0}
