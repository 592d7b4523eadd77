"""Reading the records topic back with plain aiokafka, as any consumer would, and checking it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiokafka import TopicPartition

from mbo_core.dbn import open_mbo
from mbo_core.kafka.clients import make_consumer
from mbo_core.records import MBO_DTYPE
from mbo_core.settings import Settings
from mbo_core.wire.headers import H_END_OF_STREAM
from producer.chunking import F_LAST

READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Message:
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @property
    def header(self) -> dict[str, bytes]:
        return dict(self.headers)

    @property
    def end_of_stream(self) -> bool:
        return self.header.get(H_END_OF_STREAM) == b"1"

    @property
    def records(self) -> np.ndarray:
        return np.frombuffer(self.value, dtype=MBO_DTYPE)


async def _read(settings: Settings, *, markers: int, messages: int | None) -> list[Message]:
    consumer = make_consumer(settings, "test-reader", settings.topics.records.name, group_id=None)
    await consumer.start()
    out: list[Message] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    try:

        def done() -> bool:
            if messages is not None:
                return len([m for m in out if not m.end_of_stream]) >= messages
            return sum(m.end_of_stream for m in out) >= markers

        while not done():
            assert time.monotonic() < deadline, f"read {len(out)} messages, expected more"
            batches = await consumer.getmany(timeout_ms=200)
            for partition, received in batches.items():
                out.extend(
                    Message(partition.partition, m.offset, m.key, m.value, tuple(m.headers))
                    for m in received
                )
        # Nothing beyond what was expected: the high-water mark of each partition read is right
        # after it.
        await consumer.getmany(timeout_ms=200)
        for partition in {m.partition for m in out}:
            last = max(m.offset for m in out if m.partition == partition)
            tp = TopicPartition(settings.topics.records.name, partition)
            assert consumer.highwater(tp) == last + 1
    finally:
        await consumer.stop()
    return sorted(out, key=lambda m: (m.partition, m.offset))


def read_topic(
    settings: Settings, *, markers: int = 1, messages: int | None = None
) -> list[Message]:
    """The records topic's messages: until `markers` end-of-stream markers were read, or, with
    `messages`, until that many records messages were."""
    return asyncio.run(_read(settings, markers=markers, messages=messages))


def file_records(path: Path) -> np.ndarray:
    return np.concatenate(list(open_mbo(path).batches()))


def check_chunks(messages: list[Message], bound: int) -> None:
    """Every records message holds whole events of its key's instrument within the bound."""
    for message in messages:
        if message.end_of_stream:
            assert message.value == b""
            continue
        assert len(message.value) % MBO_DTYPE.itemsize == 0
        records = message.records
        assert len(records) == int(message.header["records"])
        assert (records["instrument_id"] == int(message.key)).all()
        last = (records["flags"] & F_LAST) != 0
        if message.header.get("unterminated-tail") == b"1":
            assert not last.any(), "an unterminated tail holds no F_LAST"
            continue
        assert last[-1], "a message must end with a record flagged F_LAST"
        if len(records) > bound:
            assert not last[:-1].any(), "only a single event may exceed the chunk bound"
