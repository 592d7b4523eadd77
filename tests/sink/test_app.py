"""The sink end to end: a real broker, real ClickHouse, CLX5 records plus bbo and snapshots.

Checks: every row lands exactly once in FINAL results, values round-trip, offsets are committed
only for messages whose rows are in, a re-read of everything changes no FINAL result, and a sink
stopped mid-stream (cleanly, or by a refused insert) resumes without loss or duplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import numpy as np
import pytest
from aiokafka import TopicPartition
from clickhouse_connect.driver.client import Client

from mbo_core.kafka.clients import make_consumer
from mbo_core.kafka.topics import ensure_topics
from mbo_core.settings import Settings
from mbo_core.storage import queries
from sink.app import SinkSummary, run_sink
from sink.writer import InsertError
from tests.sink.wire import (
    CLX5_INSTRUMENT,
    CLX5_RECORDS,
    Sent,
    bbo_message,
    bbo_quality,
    clx5_records,
    event_chunks,
    last_flags,
    produce_encoded,
    produce_records,
    produce_records_async,
    snapshot_message,
    snapshot_quality,
)

pytestmark = pytest.mark.integration

CHUNK_RECORDS = 1000
IDLE_EXIT_S = 1.5


def _run(
    settings: Settings,
    client: Client,
    on_flush: Callable[[SinkSummary], None] | None = None,
) -> SinkSummary:
    """run_sink until nothing arrives for IDLE_EXIT_S."""

    async def main() -> SinkSummary:
        return await run_sink(
            settings,
            stop=asyncio.Event(),
            idle_exit_s=IDLE_EXIT_S,
            client=client,
            on_flush=on_flush,
        )

    return asyncio.run(main())


def _counts(client: Client) -> dict[str, int]:
    query = queries.row_counts()
    return {
        str(t): int(n) for t, n in client.query(query.sql, parameters=query.parameters).result_rows
    }


def _raw_count(client: Client, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


async def _committed_async(
    settings: Settings, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int | None]:
    consumer = make_consumer(settings, "test-offsets", group_id=settings.kafka.sink_group_id)
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


def _committed(
    settings: Settings, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int | None]:
    return asyncio.run(_committed_async(settings, tps))


def _with_group(settings: Settings, group: str) -> Settings:
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"sink_group_id": group})}
    )


def _with_batch(settings: Settings, records: int) -> Settings:
    pipeline = settings.pipeline.model_copy(update={"sink_batch_records": records})
    return settings.model_copy(update={"pipeline": pipeline})


def _produce_clx5(settings: Settings) -> list[Sent]:
    asyncio.run(ensure_topics(settings))
    chunks = event_chunks(clx5_records(), CHUNK_RECORDS)
    assert sum(len(chunk) for chunk in chunks) == CLX5_RECORDS  # every CLX5 event is closed
    return produce_records(settings, chunks)


def test_everything_lands_once_with_exact_values(
    infra_settings: Settings, clickhouse_client: Client
) -> None:
    settings = infra_settings
    sent = _produce_clx5(settings)
    bbo_indexes = [last_flags(s.records)[:4] for s in sent[:5]]
    bbo = [bbo_message(s, indexes) for s, indexes in zip(sent, bbo_indexes, strict=False)]
    # Snapshots after the last event of the first messages, and the final book of the stream.
    snapshot_of = [(s, last_flags(s.records)[-1]) for s in sent[:3]]
    snapshot_of.append((sent[-1], len(sent[-1].records) - 1))
    snapshots = [snapshot_message(s, [i], final=s is sent[-1]) for s, i in snapshot_of]
    # A processor that restarted republishes the same events: new offsets, same content.
    bbo_positions = produce_encoded(settings, settings.topics.bbo.name, [*bbo, bbo[0], bbo[1]])
    snapshot_positions = produce_encoded(
        settings, settings.topics.snapshots.name, [*snapshots, snapshots[0]]
    )

    summary = _run(settings, clickhouse_client)

    bbo_rows = sum(len(indexes) for indexes in bbo_indexes)
    assert _counts(clickhouse_client) == {
        "mbo_records": CLX5_RECORDS,
        "bbo": bbo_rows,
        "book_snapshots": len(snapshots),
    }
    assert summary.messages == len(sent) + 1 + len(bbo) + 2 + len(snapshots) + 1
    assert summary.dead_lettered == 0
    assert summary.rows == {
        "mbo_records": CLX5_RECORDS,
        "bbo": bbo_rows + len(bbo_indexes[0]) + len(bbo_indexes[1]),
        "book_snapshots": len(snapshots) + 1,
    }

    # Event rows keep what their headers carried through Kafka: source, ext rows, symbol.
    bbo_stored = clickhouse_client.query(
        "SELECT source_offset, record_index, publisher_id, sequence, bid_price, symbol, "
        "modify_unknown_order FROM bbo FINAL ORDER BY source_offset, record_index"
    ).result_rows
    assert [tuple(row) for row in bbo_stored] == [
        (
            s.offset, i, 0 if n % 2 else int(s.records[i]["publisher_id"]),
            None if n % 2 else int(s.records[i]["sequence"]), int(s.records[i]["price"]),
            "CLX5", bbo_quality(i)["modify_unknown_order"],
        )
        for s, indexes in zip(sent, bbo_indexes, strict=False)
        for n, i in enumerate(indexes)
    ]  # fmt: skip
    stored_snapshots = clickhouse_client.query(
        "SELECT source_offset, record_index, final, cancel_unknown_order FROM book_snapshots "
        "FINAL ORDER BY source_offset"
    ).result_rows
    assert [tuple(row) for row in stored_snapshots] == [
        (s.offset, i, s is sent[-1], snapshot_quality(i)["cancel_unknown_order"])
        for s, i in snapshot_of
    ]

    # Raw records round-trip exactly, in file order by their source position.
    table = clickhouse_client.query_arrow(
        "SELECT toUnixTimestamp64Nano(ts_event) AS ts_event, toUnixTimestamp64Nano(ts_recv) "
        "AS ts_recv, ts_in_delta, sequence, publisher_id, instrument_id, order_id, price, size, "
        "flags, channel_id, CAST(action, 'Int8') AS action, CAST(side, 'Int8') AS side, "
        "source_offset, record_index FROM mbo_records FINAL "
        "ORDER BY source_partition, source_offset, record_index"
    )
    records = clx5_records()
    for name in ("ts_event", "ts_recv", "ts_in_delta", "sequence", "publisher_id",
                 "instrument_id", "order_id", "price", "size", "flags", "channel_id"):  # fmt: skip
        assert np.array_equal(table.column(name).to_numpy(), records[name]), name
    assert table.column("action").to_numpy().tobytes() == records["action"].tobytes()
    assert table.column("side").to_numpy().tobytes() == records["side"].tobytes()
    expected_offsets = np.concatenate([np.full(len(s.records), s.offset) for s in sent])
    assert np.array_equal(table.column("source_offset").to_numpy(), expected_offsets)
    symbols = clickhouse_client.query(
        "SELECT symbol, count() FROM mbo_records FINAL GROUP BY symbol"
    ).result_rows
    assert [tuple(row) for row in symbols] == [("CLX5", CLX5_RECORDS)]
    decimal = clickhouse_client.query(
        "SELECT toString(price_decimal) FROM mbo_records FINAL "
        "WHERE source_offset = {o:UInt64} AND record_index = 0",
        parameters={"o": sent[0].offset},
    ).result_rows
    assert decimal == [("64.83",)]  # the first CLX5 record: Add at 64.83

    # The last snapshot is the book after the last record; BBO at its time is the last change.
    depth = queries.depth_at(CLX5_INSTRUMENT, int(records["ts_event"][-1]))
    (row,) = clickhouse_client.query(depth.sql, parameters=depth.parameters).result_rows
    assert row[3] == int(records["ts_event"][-1])
    # The last entry of the last bbo message is a consolidated one (odd entry): publisher 0.
    last_ts = int(sent[4].records[bbo_indexes[4][-1]]["ts_event"])
    assert len(bbo_indexes[4]) % 2 == 0
    at = queries.bbo_at(CLX5_INSTRUMENT, last_ts, publisher_id=0)
    (bbo_row,) = clickhouse_client.query(at.sql, parameters=at.parameters).result_rows
    assert bbo_row[3] == last_ts

    # Offsets were committed after the inserts: exactly past every message consumed.
    records_tp = TopicPartition(settings.topics.records.name, sent[0].partition)
    expected = {records_tp: sent[-1].offset + 2}  # the chunks, then the end-of-stream marker
    for topic, positions in (
        (settings.topics.bbo.name, bbo_positions),
        (settings.topics.snapshots.name, snapshot_positions),
    ):
        for partition, offset in positions:
            tp = TopicPartition(topic, partition)
            expected[tp] = max(expected.get(tp, 0), offset + 1)
    assert _committed(settings, expected) == expected

    # Idempotency: a new group reads everything again; FINAL results do not change.
    again = _run(_with_group(settings, settings.kafka.sink_group_id + "-again"), clickhouse_client)
    assert again.rows == summary.rows
    assert _counts(clickhouse_client) == {
        "mbo_records": CLX5_RECORDS,
        "bbo": bbo_rows,
        "book_snapshots": len(snapshots),
    }
    assert _raw_count(clickhouse_client, "mbo_records") == 2 * CLX5_RECORDS  # collapsed by FINAL


def test_a_stopped_sink_resumes_where_it_committed(
    infra_settings: Settings, clickhouse_client: Client
) -> None:
    settings = _with_batch(infra_settings, 5000)
    _produce_clx5(settings)

    async def first_run() -> SinkSummary:
        stop = asyncio.Event()
        # Stop as soon as the first batch is in: the final flush inserts what was consumed.
        return await run_sink(
            settings,
            stop=stop,
            idle_exit_s=IDLE_EXIT_S,
            client=clickhouse_client,
            on_flush=lambda summary: stop.set(),
        )

    first = asyncio.run(first_run())
    assert 0 < first.records < CLX5_RECORDS
    second = _run(settings, clickhouse_client)
    # A clean stop commits everything it inserted: nothing is read twice, nothing is missed.
    assert first.records + second.records == CLX5_RECORDS
    assert _raw_count(clickhouse_client, "mbo_records") == CLX5_RECORDS
    assert _counts(clickhouse_client)["mbo_records"] == CLX5_RECORDS


def test_nothing_is_committed_without_its_rows(
    infra_settings: Settings, clickhouse_client: Client
) -> None:
    settings = _with_batch(infra_settings, 5000)
    sent = _produce_clx5(settings)
    first_batch: list[int] = []

    def break_the_table(summary: SinkSummary) -> None:
        # After the first insert the table loses a column: the next insert is refused.
        if not first_batch:
            first_batch.append(summary.records)
            clickhouse_client.command("ALTER TABLE mbo_records DROP COLUMN channel_id")

    with pytest.raises(InsertError, match="insert into mbo_records failed"):
        _run(settings, clickhouse_client, on_flush=break_the_table)
    inserted = first_batch[0]
    assert 0 < inserted < CLX5_RECORDS
    # Committed: exactly the messages of the first batch, whose records are in the table.
    ends = np.cumsum([len(s.records) for s in sent]).tolist()
    assert inserted in ends
    tp = TopicPartition(settings.topics.records.name, sent[0].partition)
    assert _committed(settings, [tp]) == {tp: sent[ends.index(inserted)].offset + 1}

    clickhouse_client.command("ALTER TABLE mbo_records ADD COLUMN channel_id UInt8 AFTER flags")
    rest = _run(settings, clickhouse_client)
    assert inserted + rest.records == CLX5_RECORDS
    assert _counts(clickhouse_client)["mbo_records"] == CLX5_RECORDS


def test_a_transient_failure_is_retried_by_reading_again(
    infra_settings: Settings, clickhouse_client: Client
) -> None:
    settings = _with_batch(infra_settings, 5000)
    sent = _produce_clx5(settings)
    broken: list[bool] = []

    def too_many_parts(summary: SinkSummary) -> None:
        # After the first insert the table refuses inserts with TOO_MANY_PARTS (a transient
        # server condition) for a second, then accepts them again.
        if broken:
            return
        broken.append(True)
        limit = "parts_to_throw_insert = 1, parts_to_delay_insert = 1"
        clickhouse_client.command(f"ALTER TABLE mbo_records MODIFY SETTING {limit}")
        asyncio.get_running_loop().call_later(
            1.0,
            clickhouse_client.command,
            "ALTER TABLE mbo_records RESET SETTING parts_to_throw_insert, parts_to_delay_insert",
        )

    summary = _run(settings, clickhouse_client, on_flush=too_many_parts)
    assert summary.insert_failures >= 1
    assert summary.records == CLX5_RECORDS
    # The failed batch was dropped and read again: every record is in the table exactly once.
    assert _raw_count(clickhouse_client, "mbo_records") == CLX5_RECORDS
    tp = TopicPartition(settings.topics.records.name, sent[0].partition)
    assert _committed(settings, [tp]) == {tp: sent[-1].offset + 2}


def test_a_second_member_takes_partitions_over_without_loss(
    infra_settings: Settings, clickhouse_client: Client
) -> None:
    settings = _with_batch(infra_settings, 5000)
    asyncio.run(ensure_topics(settings))
    chunks = event_chunks(clx5_records(), CHUNK_RECORDS)
    half = len(chunks) // 2

    async def main() -> tuple[list[Sent], list[SinkSummary]]:
        stop = asyncio.Event()
        first_insert = asyncio.Event()
        sent = await produce_records_async(settings, chunks[:half], end_of_stream=False)

        def member(on_flush: Callable[[SinkSummary], None] | None) -> asyncio.Task[SinkSummary]:
            return asyncio.create_task(
                run_sink(
                    settings,
                    stop=stop,
                    idle_exit_s=IDLE_EXIT_S,
                    client=clickhouse_client,
                    on_flush=on_flush,
                )
            )

        first = member(lambda summary: first_insert.set())
        await asyncio.wait_for(first_insert.wait(), 30)
        # A second member joins while the first is consuming: the group rebalances, the first
        # one inserts and commits what it holds before its partitions move.
        second = member(None)
        sent += await produce_records_async(settings, chunks[half:])
        return sent, list(await asyncio.gather(first, second))

    sent, summaries = asyncio.run(main())
    assert sum(summary.records for summary in summaries) >= CLX5_RECORDS
    assert _counts(clickhouse_client)["mbo_records"] == CLX5_RECORDS
    tp = TopicPartition(settings.topics.records.name, sent[0].partition)
    assert _committed(settings, [tp]) == {tp: sent[-1].offset + 2}
