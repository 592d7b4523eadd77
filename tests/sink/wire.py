"""Test helpers: CLX5 cut into records messages per the wire format, and bbo/snapshot messages.

Kept independent of the producer and processor stages: these follow mbo_core/schemas.py only,
so the sink is tested against the documented formats, not against another stage's code.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mbo_core.dbn import open_mbo
from mbo_core.kafka import make_producer
from mbo_core.prices import format_price
from mbo_core.records import MBO_DTYPE
from mbo_core.schemas import (
    BBO_SCHEMA,
    SNAPSHOT_SCHEMA,
    end_of_stream_headers,
    instrument_key,
    records_headers,
)
from mbo_core.settings import Settings
from tests.paths import CLX5

F_LAST = 128  # DBN flag; not imported from mbo_core.book, which loads the compiled engine
CLX5_RECORDS = 38_212
CLX5_INSTRUMENT = 432669
CLX5_SYMBOL = "CLX5"
DATASET = "GLBX.MDP3"
QUALITY = ("cancel_unknown_order", "modify_unknown_order")


@functools.cache
def clx5_records() -> np.ndarray:
    records = np.concatenate(list(open_mbo(CLX5).batches()))
    records.flags.writeable = False
    return records


def event_chunks(records: np.ndarray, max_records: int) -> list[np.ndarray]:
    """Runs of whole events (cut right after F_LAST records) of at most max_records records,
    unless one event is larger; records of a trailing event without F_LAST are left out. One
    instrument only, as in CLX5."""
    assert len(np.unique(records["instrument_id"])) <= 1
    ends = np.flatnonzero(records["flags"] & F_LAST) + 1
    chunks: list[np.ndarray] = []
    start = 0
    previous_end = 0
    for end in ends.tolist():
        if end - start > max_records and previous_end > start:
            chunks.append(records[start:previous_end])
            start = previous_end
        previous_end = end
    if previous_end > start:
        chunks.append(records[start:previous_end])
    return chunks


@dataclass(frozen=True)
class Sent:
    """Where a records message landed and what it held."""

    partition: int
    offset: int
    records: np.ndarray


async def _send_all(
    settings: Settings, topic: str, messages: Sequence[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> list[tuple[int, int]]:
    producer = make_producer(settings, "test-producer")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=key, value=value, headers=headers)
            for key, value, headers in messages
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(int(m.partition), int(m.offset)) for m in metadata]


def produce_records(
    settings: Settings, chunks: Sequence[np.ndarray], *, end_of_stream: bool = True
) -> list[Sent]:
    """Send chunks as records messages (plus the end-of-stream marker); returns where each
    chunk landed, in order."""
    return asyncio.run(produce_records_async(settings, chunks, end_of_stream=end_of_stream))


async def produce_records_async(
    settings: Settings, chunks: Sequence[np.ndarray], *, end_of_stream: bool = True
) -> list[Sent]:
    key = instrument_key(CLX5_INSTRUMENT)
    messages = [
        (
            key,
            chunk.tobytes(),
            records_headers(
                dataset=DATASET, symbol=CLX5_SYMBOL, sent_ns=1_000 + i, records=len(chunk)
            ),
        )
        for i, chunk in enumerate(chunks)
    ]
    if end_of_stream:
        messages.append(
            (key, b"", end_of_stream_headers(dataset=DATASET, symbol=CLX5_SYMBOL, sent_ns=9))
        )
    positions = await _send_all(settings, settings.topics.records.name, messages)
    return [
        Sent(partition, offset, chunk)
        for (partition, offset), chunk in zip(positions, chunks, strict=False)
    ]


def produce_json(
    settings: Settings, topic: str, payloads: Sequence[dict[str, Any]]
) -> list[tuple[int, int]]:
    """Send JSON messages keyed by the CLX5 instrument; returns (partition, offset) of each."""
    key = instrument_key(CLX5_INSTRUMENT)
    return asyncio.run(_send_all(settings, topic, [(key, orjson.dumps(p), []) for p in payloads]))


def bbo_message(sent: Sent, indexes: Sequence[int]) -> dict[str, Any]:
    """A columnar bbo message about the records message `sent`: one entry per index (an F_LAST
    record), with values derived from that record so a test can recompute them: bid = its price,
    ask = price + 0.01, sizes from its size, the consolidated row (null publisher) on odd
    entries, quality counters growing with the record index."""
    rows = [sent.records[i] for i in indexes]
    prices = [int(r["price"]) for r in rows]
    return {
        "schema": BBO_SCHEMA,
        "instrument_id": CLX5_INSTRUMENT,
        "symbol": CLX5_SYMBOL,
        "source": {"partition": sent.partition, "offset": sent.offset},
        "sent_ns": 5_000 + sent.offset,
        "publisher_id": [None if n % 2 else int(r["publisher_id"]) for n, r in enumerate(rows)],
        "record_index": list(indexes),
        "ts_event": [int(r["ts_event"]) for r in rows],
        "ts_recv": [int(r["ts_recv"]) for r in rows],
        "sequence": [None if n % 2 else int(r["sequence"]) for n, r in enumerate(rows)],
        "bid_price": [format_price(p) for p in prices],
        "bid_size": [int(r["size"]) for r in rows],
        "bid_count": [1] * len(rows),
        "ask_price": [format_price(p + 10_000_000) for p in prices],
        "ask_size": [int(r["size"]) + 1 for r in rows],
        "ask_count": [2] * len(rows),
        "crossed": [False] * len(rows),
        "locked": [False] * len(rows),
        "quality": {name: [i * (q + 1) for i in indexes] for q, name in enumerate(QUALITY)},
    }


def snapshot_message(sent: Sent, index: int, *, final: bool = False) -> dict[str, Any]:
    """A snapshots message of `sent` holding the snapshot after record `index`."""
    return {
        "schema": SNAPSHOT_SCHEMA,
        "instrument_id": CLX5_INSTRUMENT,
        "symbol": CLX5_SYMBOL,
        "source": {"partition": sent.partition, "offset": sent.offset},
        "sent_ns": 7_000 + sent.offset,
        "depth": 10,
        "snapshots": [snapshot(sent, index, final=final)],
    }


def snapshot(sent: Sent, index: int, *, final: bool = False) -> dict[str, Any]:
    """A depth snapshot after record `index` of `sent`: two bid levels, one ask level."""
    record = sent.records[index]
    price = int(record["price"])
    return {
        "instrument_id": CLX5_INSTRUMENT,
        "publisher_id": int(record["publisher_id"]),
        "symbol": CLX5_SYMBOL,
        "ts_event": int(record["ts_event"]),
        "ts_recv": int(record["ts_recv"]),
        "sequence": int(record["sequence"]),
        "bids": [
            {"price": format_price(price), "size": 3, "count": 1},
            {"price": format_price(price - 10_000_000), "size": 7, "count": 2},
        ],
        "asks": [{"price": format_price(price + 10_000_000), "size": 4, "count": 1}],
        "crossed": False,
        "locked": False,
        "quality": dict.fromkeys(QUALITY, index),
        "record_index": index,
        "final": final,
    }


def last_flags(records: np.ndarray) -> list[int]:
    """Indexes of the F_LAST records of a chunk."""
    return np.flatnonzero(records["flags"] & F_LAST).tolist()


NO_RECORDS = np.zeros(0, dtype=MBO_DTYPE)
