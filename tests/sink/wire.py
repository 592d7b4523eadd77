"""Test helpers: CLX5 cut into records messages per the wire format, and bbo/snapshot messages.

Kept independent of the producer and processor stages: messages are built with mbo_core.wire's
encoders only (never by hand, never by another stage's code), so the sink is tested against the
documented formats. Every value of a bbo or snapshot message is derived from a CLX5 record so a
test can recompute it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mbo_core.dbn import open_mbo
from mbo_core.kafka.clients import make_producer
from mbo_core.prices import UNDEF_PRICE
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.records import MBO_DTYPE
from mbo_core.settings import Settings
from mbo_core.wire import (
    Encoded,
    EventContext,
    encode_bbo,
    encode_snapshots,
    end_of_stream_headers,
    instrument_key,
    records_headers,
)
from tests.paths import CLX5

F_LAST = 128  # DBN flag; not imported from mbo_core.book, which loads the compiled engine
CLX5_RECORDS = 38_212
CLX5_INSTRUMENT = 432669
CLX5_SYMBOL = "CLX5"
REPLAY_ID = "replay-test"
DATASET = "GLBX.MDP3"
CENT = 10_000_000  # 0.01 in 1e-9 price units


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


def produce_encoded(
    settings: Settings, topic: str, messages: Sequence[Encoded]
) -> list[tuple[int, int]]:
    """Send wire messages (value and headers) keyed by the CLX5 instrument; returns
    (partition, offset) of each, in order."""
    key = instrument_key(CLX5_INSTRUMENT)
    return asyncio.run(
        _send_all(settings, topic, [(key, m.value, list(m.headers)) for m in messages])
    )


def context(sent: Sent, sent_ns: int) -> EventContext:
    """The context of an event message computed from the records message `sent`."""
    return EventContext(
        instrument_id=CLX5_INSTRUMENT,
        symbol=CLX5_SYMBOL,
        source_partition=sent.partition,
        source_offset=sent.offset,
        sent_ns=sent_ns,
        replay_id=REPLAY_ID,
        replay_copy=2,
    )


def bbo_quality(index: int) -> dict[str, int]:
    """The quality counters of the bbo entry of record `index`: counter q is index * (q + 1)."""
    return {name: index * (q + 1) for q, name in enumerate(QUALITY_FIELDS)}


def bbo_fields(sent: Sent, indexes: Sequence[int]) -> dict[str, np.ndarray]:
    """The encode_bbo arrays of a bbo message about the records message `sent`: one entry per
    index (an F_LAST record), with values derived from that record so a test can recompute them:
    bid = its price, ask = price + 0.01, bid size = its size, ask size = size + 1, counts 1 and
    2, the consolidated book (publisher 0, no sequence) on odd entries, quality counters
    `bbo_quality(index)`. Change an array and pass it to `bbo_message` to vary one."""
    index = np.asarray(indexes, dtype=np.int64)
    rows = sent.records[index]  # a copy
    n = len(index)
    price = rows["price"].astype(np.int64)
    size = rows["size"].astype(np.int64)
    bbo = np.stack(
        [price, size, np.ones(n, np.int64), price + CENT, size + 1, np.full(n, 2, np.int64)],
        axis=1,
    )
    return {
        "publisher_id": rows["publisher_id"],
        "record_index": index.astype(np.uint32),
        "ts_event": rows["ts_event"],
        "ts_recv": rows["ts_recv"],
        "sequence": rows["sequence"],
        "bbo": bbo,
        "quality": np.outer(index, np.arange(1, len(QUALITY_FIELDS) + 1)).astype(np.uint64),
        "consolidated": np.arange(n) % 2 == 1,
        "closing": rows,
    }


def bbo_message(sent: Sent, indexes: Sequence[int], **changes: np.ndarray) -> Encoded:
    """The bbo message of `bbo_fields(sent, indexes)` (sent-ns 5000 + the records offset), with
    `changes` replacing some of its arrays."""
    fields = {**bbo_fields(sent, indexes), **changes}
    return encode_bbo(context(sent, 5_000 + sent.offset), **fields)


def snapshot_quality(index: int) -> dict[str, int]:
    """The quality counters of the snapshot after record `index`: every counter is index."""
    return dict.fromkeys(QUALITY_FIELDS, index)


def snapshot_fields(
    sent: Sent, indexes: Sequence[int], *, depth: int = 10
) -> dict[str, np.ndarray]:
    """The encode_snapshots arrays of depth snapshots after records `indexes` of `sent`, each of
    two bid levels (its price x 3 in 1 order, price - 0.01 x 7 in 2) and one ask level
    (price + 0.01 x 4 in 1), the levels up to `depth` (at least 2) undefined; quality
    `snapshot_quality`, not consolidated, not final."""
    index = np.asarray(indexes, dtype=np.int64)
    rows = sent.records[index]  # a copy
    n = len(index)
    price = rows["price"].astype(np.int64)
    bids = np.zeros((n, depth, 3), dtype=np.int64)
    asks = np.zeros((n, depth, 3), dtype=np.int64)
    bids[:, :, 0] = asks[:, :, 0] = UNDEF_PRICE
    bids[:, 0] = np.stack([price, np.full(n, 3), np.full(n, 1)], axis=1)
    bids[:, 1] = np.stack([price - CENT, np.full(n, 7), np.full(n, 2)], axis=1)
    asks[:, 0] = np.stack([price + CENT, np.full(n, 4), np.full(n, 1)], axis=1)
    return {
        "publisher_id": rows["publisher_id"],
        "record_index": index.astype(np.uint32),
        "ts_event": rows["ts_event"],
        "ts_recv": rows["ts_recv"],
        "sequence": rows["sequence"],
        "bids": bids,
        "asks": asks,
        "quality": np.repeat(index.astype(np.uint64)[:, None], len(QUALITY_FIELDS), axis=1),
        "consolidated": np.zeros(n, dtype=bool),
        "final": np.zeros(n, dtype=bool),
    }


def snapshot_message(
    sent: Sent,
    indexes: Sequence[int],
    *,
    final: bool | Sequence[bool] = False,
    depth: int = 10,
    **changes: np.ndarray,
) -> Encoded:
    """The snapshots message of `snapshot_fields(sent, indexes)` (sent-ns 7000 + the records
    offset); `final`: the final mark of every snapshot, or of each; `changes` replace some of its
    arrays."""
    fields = snapshot_fields(sent, indexes, depth=depth)
    fields["final"][:] = final
    fields.update(changes)
    return encode_snapshots(context(sent, 7_000 + sent.offset), depth=depth, **fields)


def last_flags(records: np.ndarray) -> list[int]:
    """Indexes of the F_LAST records of a chunk."""
    return np.flatnonzero(records["flags"] & F_LAST).tolist()


NO_RECORDS = np.zeros(0, dtype=MBO_DTYPE)
