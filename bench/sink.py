"""Sink benchmark: raw MBO records into ClickHouse (chDB), directly and through Kafka.

    poetry run python -m bench.sink [--records 1000000] [--chunk 1000] [--batch 200000]
                                    [--compare] [--file F]

Input: the records of FILE (default: the CLX5 sample) repeated to --records, cut into
messages of --chunk records (each with its own source offset, as the sink sees Kafka chunks).

1. insert: the sink's insert path alone (`sink.writer.insert_records`: building the columns
   from the raw records, the Native block, `raw_insert`) in batches of --batch records into a
   fresh chDB in a temporary directory. --compare adds the Arrow path
   (`mbo_core.storage.clickhouse.insert_columns`) on the same batches.
2. kafka: a local broker (started and stopped here) gets every chunk as a records message
   first; then `run_sink` consumes them into another database of the same chDB. The rate is
   records over the time from the first message consumed to the last insert (group join and
   producing excluded).

Prints JSON: insert_rows_per_s, kafka_to_clickhouse_rows_per_s, method, and the details.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mbo_core.dbn import open_mbo
from mbo_core.settings import ClickHouseSettings, Settings
from mbo_core.storage.clickhouse import apply_schema, connect, insert_columns
from sink.decode import RecordChunk, record_columns
from sink.native import Dictionary
from sink.writer import insert_records

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "CLX5_mbo.dbn"
METHOD = "Native block via clickhouse-connect raw_insert, optimize_on_insert=0"


def repeated_records(path: Path, target: int) -> np.ndarray:
    base = np.concatenate(list(open_mbo(path).batches()))
    copies = -(-target // len(base))
    return np.concatenate([base] * copies)[:target]


def chunks_of(records: np.ndarray, chunk: int) -> list[RecordChunk]:
    return [
        RecordChunk(0, i, "CLX5", 0, records[start : start + chunk])
        for i, start in enumerate(range(0, len(records), chunk))
    ]


def batches_of(chunks: list[RecordChunk], batch: int) -> list[list[RecordChunk]]:
    out: list[list[RecordChunk]] = [[]]
    rows = 0
    for chunk in chunks:
        if rows >= batch:
            out.append([])
            rows = 0
        out[-1].append(chunk)
        rows += chunk.rows
    return out


def _settings(root: Path, database: str = "bench_insert", **values: Any) -> Settings:
    """Settings from defaults and `values` only (no .env, no MBO_* variables)."""
    clickhouse = ClickHouseSettings(url=f"chdb://{root / 'chdb'}", database=database)
    return Settings(  # type: ignore[call-arg]
        _env_file=None, _secrets_dir=None, data_dir=root / "data", clickhouse=clickhouse, **values
    )


def bench_insert(settings: Settings, chunks: list[RecordChunk], batch: int) -> dict[str, Any]:
    client = connect(settings)
    try:
        apply_schema(client)
        started = time.perf_counter()
        rows = sum(insert_records(client, part).rows for part in batches_of(chunks, batch))
        seconds = time.perf_counter() - started
    finally:
        client.close()
    return {"insert_rows": rows, "insert_seconds": round(seconds, 3)}


def bench_arrow(settings: Settings, chunks: list[RecordChunk], batch: int) -> dict[str, Any]:
    client = connect(settings, database="bench_arrow")
    try:
        apply_schema(client)
        started = time.perf_counter()
        rows = 0
        for part in batches_of(chunks, batch):
            columns: dict[str, Any] = dict(record_columns(part))
            # Arrow takes the string columns as Python lists (the Native path's Dictionary is
            # its own layout).
            for name in ("symbol", "replay_id"):
                strings = columns.pop(name)
                assert isinstance(strings, Dictionary)
                columns[name] = strings.to_list()
            rows += insert_columns(client, "mbo_records", columns)
        seconds = time.perf_counter() - started
    finally:
        client.close()
    return {
        "arrow_insert_rows_per_s": round(rows / seconds),
        "arrow_insert_seconds": round(seconds, 3),
    }


async def _produce(settings: Settings, chunks: list[RecordChunk]) -> None:
    from mbo_core.kafka.clients import make_producer  # noqa: PLC0415
    from mbo_core.kafka.topics import ensure_topics  # noqa: PLC0415
    from mbo_core.wire import instrument_key, records_headers  # noqa: PLC0415

    await ensure_topics(settings)
    producer = make_producer(settings, "bench-producer")
    await producer.start()
    try:
        key = instrument_key(int(chunks[0].records["instrument_id"][0]))
        for chunk in chunks:
            headers = records_headers(
                dataset="GLBX.MDP3", symbol="CLX5", sent_ns=time.time_ns(), records=chunk.rows
            )
            await producer.send(
                settings.topics.records.name,
                key=key,
                value=chunk.records.tobytes(),
                headers=headers,
            )
        await producer.flush()
    finally:
        await producer.stop()


def bench_kafka(root: Path, chunks: list[RecordChunk], batch: int) -> dict[str, Any]:
    from mbo_core.kafka.broker import LocalBroker  # noqa: PLC0415
    from sink.app import run_sink  # noqa: PLC0415

    base = _settings(root, pipeline={"sink_batch_records": batch})
    with LocalBroker(base) as local:
        settings = _settings(
            root,
            "bench_kafka",
            kafka={"bootstrap_servers": local.bootstrap_servers},
            pipeline={"sink_batch_records": batch},
        )
        started = time.perf_counter()
        asyncio.run(_produce(settings, chunks))
        produce_seconds = time.perf_counter() - started

        async def consume() -> Any:
            return await run_sink(settings, stop=asyncio.Event(), idle_exit_s=3.0)

        summary = asyncio.run(consume())
    return {
        "kafka_to_clickhouse_rows_per_s": round(summary.records_per_s),
        "kafka_records": summary.records,
        "kafka_inserts": summary.inserts,
        "kafka_active_seconds": round(summary.active_seconds, 3),
        "produce_seconds": round(produce_seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1000, help="records per Kafka message")
    parser.add_argument("--batch", type=int, default=200_000, help="records per insert")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--compare", action="store_true", help="also time the Arrow path")
    args = parser.parse_args()

    chunks = chunks_of(repeated_records(args.file, args.records), args.chunk)
    with tempfile.TemporaryDirectory(prefix="mbo-bench-sink-") as tmp:
        root = Path(tmp)
        result: dict[str, Any] = {"records": args.records, "method": METHOD}
        inserted = bench_insert(_settings(root), chunks, args.batch)
        result["insert_rows_per_s"] = round(inserted["insert_rows"] / inserted["insert_seconds"])
        result.update(inserted)
        if args.compare:
            result.update(bench_arrow(_settings(root), chunks, args.batch))
        result.update(bench_kafka(root, chunks, args.batch))
        result.update(chunk_records=args.chunk, batch_records=args.batch)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
