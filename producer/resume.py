"""Where a replay goes on from after its producer died: what the records topic already holds.

Every records message and end-of-stream marker a replay sends carries its `replay-id` and
`instrument-records`: the records of its instrument the replay has sent, that message's
included (mbo_core/wire/records.py). An instrument's messages go to one partition, in order, and
the producer is idempotent, so the newest message of the replay for an instrument says exactly
how many of its records are in the topic, and whether its end-of-stream marker is. A producer
started again with the same replay id skips those records of each instrument (`ResumeFilter`)
and sends the rest: every record once in the topic, wherever the first one was killed.

The newest message of each instrument is found by reading each partition backwards from its
end, in growing steps, until every instrument of the file that maps to it was seen, or a message
of another replay (the one before: a replay never interleaves with another, mbo_core.replay_lock)
or the partition's start was reached.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from mbo_core.errors import MboError
from mbo_core.kafka.clients import make_consumer, topic_partitions
from mbo_core.records import take_records
from mbo_core.settings import Settings
from mbo_core.wire import instrument_key
from mbo_core.wire.headers import H_END_OF_STREAM, H_INSTRUMENT_RECORDS, H_REPLAY_ID, header_map

log = logging.getLogger("producer")

#: Messages read back per partition in the first backward step (then 4x more each step).
FIRST_STEP = 256
#: Empty fetches (1 s each) in a row before reading back gives up.
READ_PATIENCE = 30


def new_replay_id(prefix: str = "replay") -> str:
    """A fresh replay id: when it started (UTC) and a random part, e.g.
    `replay-20261207T142716Z-3f9a1c2e`."""
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{prefix}-{started}-{uuid.uuid4().hex[:8]}"


@dataclass
class Sent:
    """What the topic holds of one instrument for the replay."""

    records: int = 0
    end_of_stream: bool = False


@dataclass
class ResumePoint:
    """What the topic holds of a replay, per instrument (absent: nothing yet)."""

    replay_id: str
    sent: dict[int, Sent] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.sent.values())

    def ended(self, instrument_id: int) -> bool:
        sent = self.sent.get(instrument_id)
        return sent is not None and sent.end_of_stream


async def resume_point(
    settings: Settings, replay_id: str, instrument_ids: Callable[[], Iterable[int]]
) -> ResumePoint:
    """What the records topic holds of replay `replay_id` for each of `instrument_ids()`
    (called only when the topic holds anything: on an empty topic this costs its offsets)."""
    topic = settings.topics.records.name
    tps = await topic_partitions(settings, topic)
    partitions = [tp.partition for tp in tps]
    point = ResumePoint(replay_id)
    consumer = make_consumer(settings, "producer-resume", group_id=None)
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        if not any(ends[tp] > starts[tp] for tp in tps):
            return point
        wanted: dict[int, set[bytes]] = {}
        for instrument_id in instrument_ids():
            key = instrument_key(instrument_id)
            # The partition the producer's client sends this key to (murmur2, as Java's client).
            partition = DefaultPartitioner()(key, partitions, partitions)
            wanted.setdefault(partition, set()).add(key)
        for partition, keys in sorted(wanted.items()):
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            await _read_back(consumer, tp, (starts[tp], ends[tp]), replay_id.encode(), keys, point)
    finally:
        await consumer.stop()
    return point


async def _read_back(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    offsets: tuple[int, int],
    replay_id: bytes,
    keys: set[bytes],
    point: ResumePoint,
) -> None:
    """The newest message of the replay for each of `keys` in the partition, whose offsets span
    [start, end): read backwards in growing steps."""
    start, end = offsets
    missing = set(keys)
    step = FIRST_STEP
    upper = end
    while missing and upper > start:
        lower = max(start, upper - step)
        newest: dict[bytes, Sent] = {}
        older_replay_seen = False
        consumer.seek(tp, lower)
        position = lower
        idle = 0
        while position < upper:
            fetched = await consumer.getmany(tp, timeout_ms=1000, max_records=step)
            messages = fetched.get(tp, [])
            if not messages:
                idle += 1
                if idle > READ_PATIENCE:
                    raise MboError(
                        f"cannot read {tp.topic}[{tp.partition}] back from offset {position} "
                        "to find where the replay stopped"
                    )
                continue
            idle = 0
            for message in messages:
                if message.offset >= upper:
                    position = upper
                    break
                position = message.offset + 1
                headers = header_map(message.headers)
                replay = headers.get(H_REPLAY_ID)
                if replay is None:
                    continue  # not a replay's message (injected, dead-letter tests...)
                if replay != replay_id:
                    older_replay_seen = True
                    newest.clear()  # ours are all after it
                    continue
                if message.key in missing:
                    newest[message.key] = Sent(
                        records=int(headers.get(H_INSTRUMENT_RECORDS, b"0") or 0),
                        end_of_stream=headers.get(H_END_OF_STREAM) == b"1",
                    )
        for key, sent in newest.items():
            point.sent[int(key)] = sent
            missing.discard(key)
        if older_replay_seen:
            return
        upper = lower
        step *= 4


class ResumeFilter:
    """Drops the records a replay already sent: the first `n` records of each instrument in
    the replay's stream of records (file records and the Clears between copies alike). Without
    a resume point (or once every instrument is past its count) it returns records as they are."""

    def __init__(self, point: ResumePoint | None) -> None:
        sent = {} if point is None else point.sent
        self.remaining = {i: s.records for i, s in sent.items() if s.records}

    def __call__(self, records: np.ndarray) -> np.ndarray:
        if not self.remaining or not len(records):
            return records
        instruments = records["instrument_id"]
        keep = np.ones(len(records), dtype=bool)
        for instrument_id, left in list(self.remaining.items()):
            mine = np.flatnonzero(instruments == instrument_id)
            if not len(mine):
                continue
            skipped = min(left, len(mine))
            keep[mine[:skipped]] = False
            if left > skipped:
                self.remaining[instrument_id] = left - skipped
            else:
                del self.remaining[instrument_id]
        if keep.all():
            return records
        kept: np.ndarray = take_records(records, keep)
        return kept
