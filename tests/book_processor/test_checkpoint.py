"""book_processor.checkpoint: a restored publisher continues exactly as an uninterrupted one, and
a checkpoint that cannot be trusted is skipped; PartitionBooks.rebuild resumes from one on a real
broker and falls back to offset 0 when the topic no longer holds the fingerprinted message."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from book_processor import app as app_module
from book_processor.app import PartitionBooks, _fingerprint_at
from book_processor.checkpoint import CheckpointStore, fingerprint
from book_processor.publishing import BookPublisher, Published
from mbo_core import metrics
from mbo_core.dbn import open_mbo
from mbo_core.kafka.clients import make_consumer, make_producer
from mbo_core.kafka.topics import TopicSpec, ensure_topics
from mbo_core.settings import Settings
from tests.book_processor.test_publishing import KEY, SECOND, chunks, headers
from tests.conftest import make_settings
from tests.paths import CLX5

TOPIC = "mbo.records"
PARTITION = 3


def clx5_messages(size: int = 512) -> list[np.ndarray]:
    records = np.concatenate(list(open_mbo(CLX5).batches()))
    return chunks(records, size)


def new_publisher(interval: int = SECOND) -> BookPublisher:
    return BookPublisher(PARTITION, snapshot_interval_ns=interval, snapshot_depth=10)


def feed(publisher: BookPublisher, messages: list[np.ndarray], start: int) -> list[Published]:
    return [
        publisher.process(offset, KEY, m.tobytes(), headers(len(m)))
        for offset, m in enumerate(messages[start:], start)
    ]


def checkpoint_after(store: CheckpointStore, messages: list[np.ndarray], k: int) -> None:
    publisher = new_publisher()
    feed(publisher, messages[:k], 0)
    last = messages[k - 1]
    content = store.encode(publisher, fingerprint(KEY, last.tobytes(), headers(len(last))))
    assert store.write(PARTITION, k, content) is not None


def load(store: CheckpointStore, k: int, interval: int = SECOND) -> BookPublisher | None:
    found = store.load(PARTITION, k, snapshot_interval_ns=interval, snapshot_depth=10)
    return None if found is None else found.publisher


def test_a_restored_publisher_publishes_what_an_uninterrupted_one_does(tmp_path: Path) -> None:
    messages = clx5_messages()
    uninterrupted = feed(new_publisher(), messages, 0)
    store = CheckpointStore(tmp_path, TOPIC)
    for k in (1, len(messages) // 3, len(messages) - 1):
        checkpoint_after(store, messages, k)
        restored = load(store, k)
        assert restored is not None and restored.next_offset == k
        assert feed(restored, messages, k) == uninterrupted[k:], k


def test_checkpoints_written_differently_are_skipped(tmp_path: Path) -> None:
    messages = clx5_messages()
    store = CheckpointStore(tmp_path, TOPIC)
    checkpoint_after(store, messages, 5)
    assert load(store, 5) is not None
    assert load(store, 5, interval=2 * SECOND) is None  # other snapshot interval
    assert CheckpointStore(tmp_path, "other.records").load(
        PARTITION, 5, snapshot_interval_ns=SECOND, snapshot_depth=10
    ) is None  # fmt: skip
    path = tmp_path / TOPIC / str(PARTITION) / f"{5:020d}.ckpt"
    line, _, body = path.read_bytes().partition(b"\n")
    path.write_bytes(line.replace(b'"code": "', b'"code": "0') + b"\n" + body)
    assert load(store, 5) is None  # other code
    path.write_bytes(line + b"\n" + body[: len(body) // 2])
    assert load(store, 5) is None  # damaged
    path.write_bytes(b"[1]\n" + body)
    assert load(store, 5) is None  # a header that is not an object
    assert load(store, 6) is None  # none at that offset


def test_leftovers_of_dead_writes_are_removed(tmp_path: Path) -> None:
    messages = clx5_messages()
    store = CheckpointStore(tmp_path, TOPIC)
    checkpoint_after(store, messages, 2)
    directory = tmp_path / TOPIC / str(PARTITION)
    old, recent = directory / ".dead.tmp", directory / ".writing.tmp"
    old.write_bytes(b"x")
    recent.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    checkpoint_after(store, messages, 4)
    assert not old.exists() and recent.exists()  # another writer may still be busy with it
    assert directory.stat().st_mode & 0o077 == 0  # only the processor may write or read here


def test_the_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    messages = clx5_messages()
    store = CheckpointStore(tmp_path, TOPIC, keep=3)
    for k in (2, 4, 6, 8, 10):
        checkpoint_after(store, messages, k)
    assert store.offsets(PARTITION) == [10, 8, 6]
    assert store.offsets(PARTITION + 1) == []
    # A new checkpoint below the others (the topic was recreated): the higher ones go.
    checkpoint_after(store, messages, 3)
    assert store.offsets(PARTITION) == [3]


def test_an_unwritable_directory_only_loses_the_checkpoint(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = CheckpointStore(blocker, TOPIC)
    assert store.write(PARTITION, 1, b"{}\n") is None
    assert store.offsets(PARTITION) == []


def test_the_fingerprint_covers_key_value_and_headers_in_any_order() -> None:
    h = [("a", b"1"), ("b", b"2")]
    assert fingerprint(b"k", b"v", h) == fingerprint(b"k", b"v", list(reversed(h)))
    assert fingerprint(b"k", b"v", h) != fingerprint(b"k", b"w", h)
    assert fingerprint(b"k", b"v", h) != fingerprint(b"j", b"v", h)
    assert fingerprint(b"k", b"v", h) != fingerprint(b"k", b"v", [("a", b"1"), ("b", b"3")])
    assert fingerprint(b"kv", b"", None) != fingerprint(b"k", b"v", None)


# --------------------------------------------------------------- on the real broker


async def _produce(settings: Settings, messages: list[np.ndarray]) -> None:
    producer = make_producer(settings, "test-checkpoint")
    await producer.start()
    try:
        for m in messages:
            await producer.send(
                settings.topics.records.name, m.tobytes(), KEY, PARTITION, None, headers(len(m))
            )
        await producer.flush()
    finally:
        await producer.stop()


def _restored() -> float:
    return float(metrics.CHECKPOINTS.labels("restored")._value.get())


@pytest.mark.integration
def test_a_rebuild_resumes_from_the_newest_usable_checkpoint(infra_settings: Settings) -> None:
    messages = clx5_messages()[:40]
    topic = infra_settings.topics.records.name
    asyncio.run(ensure_topics(infra_settings, [TopicSpec(topic, PARTITION + 1, 1)]))
    asyncio.run(_produce(infra_settings, messages))
    uninterrupted = new_publisher()
    expected = feed(uninterrupted, messages, 0)

    root = infra_settings.data_dir / "checkpoints"
    store = CheckpointStore(root, topic)
    checkpoint_after(store, messages, 10)
    checkpoint_after(store, messages, 30)
    books = PartitionBooks(infra_settings, store)

    # Until offset 20: the checkpoint at 30 is too new, the one at 10 serves.
    restored_before = _restored()
    rebuilt = asyncio.run(books.rebuild(PARTITION, 20))
    assert _restored() == restored_before + 1
    assert feed(rebuilt, messages, 20) == expected[20:]
    # Until exactly a checkpoint's offset: it serves, nothing is re-read.
    reread = metrics.REBUILD_RECORDS._value.get()
    rebuilt = asyncio.run(books.rebuild(PARTITION, 30))
    assert _restored() == restored_before + 2
    assert metrics.REBUILD_RECORDS._value.get() == reread
    assert feed(rebuilt, messages, 30) == expected[30:]
    restored_before += 1

    # A checkpoint whose message is not the topic's (the topic was recreated): from offset 0.
    for offset in store.offsets(PARTITION):
        (root / topic / str(PARTITION) / f"{offset:020d}.ckpt").unlink()
    publisher = new_publisher()
    feed(publisher, messages[:25], 0)
    store.write(PARTITION, 25, store.encode(publisher, fingerprint(b"other", b"", None)))
    rebuilt = asyncio.run(books.rebuild(PARTITION, 30))
    assert _restored() == restored_before + 1
    assert feed(rebuilt, messages, 30) == expected[30:]
    assert store.offsets(PARTITION) == []  # the stale checkpoint is gone

    # A message that cannot be read (past the end here; deleted by retention elsewhere) cannot
    # be checked: None, not a mismatch.
    assert asyncio.run(_fingerprint_of(infra_settings, len(messages) + 5)) is None
    assert asyncio.run(_fingerprint_of(infra_settings, 7)) == fingerprint(
        KEY, messages[7].tobytes(), headers(len(messages[7]))
    )


async def _fingerprint_of(settings: Settings, offset: int) -> str | None:
    consumer = make_consumer(settings, "test-checkpoint", group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topics.records.name, PARTITION)
        consumer.assign([tp])
        return await _fingerprint_at(consumer, tp, offset)
    finally:
        await consumer.stop()


# ------------------------------------------------------------- the agent's side


def test_the_agent_checkpoints_each_partition_every_interval(tmp_path: Path) -> None:
    messages = clx5_messages()[:6]
    store = CheckpointStore(tmp_path, TOPIC)

    async def run(interval_s: float) -> None:
        settings = make_settings(pipeline={"checkpoint_interval_s": interval_s})
        books = PartitionBooks(settings, store)
        publisher = await books.publisher_at(PARTITION, 0)  # no rebuild at offset 0
        for offset, m in enumerate(messages):
            publisher.process(offset, KEY, m.tobytes(), headers(len(m)))
            if offset == 2:
                books._checkpointed_at[PARTITION] -= 3600  # the interval has passed
            books.after_message(publisher, KEY, m.tobytes(), headers(len(m)))
            await asyncio.gather(*books._writing.values())

    asyncio.run(run(0))  # off
    assert store.offsets(PARTITION) == []
    asyncio.run(run(60))
    assert store.offsets(PARTITION) == [3]  # once, after offset 2, not again within 60 s
    found = store.load(PARTITION, 3, snapshot_interval_ns=SECOND, snapshot_depth=10)
    assert found is not None
    assert found.fingerprint == fingerprint(KEY, messages[2].tobytes(), headers(len(messages[2])))


class _GappedConsumer:
    """Hands out offsets 0-4 and 8-9 of a partition: what a rebuild sees after retention
    deleted 5-7 (the local broker cannot delete records, so this stands in for it)."""

    def __init__(self, messages: list[np.ndarray]) -> None:
        self.records = [
            ConsumerRecord(
                TOPIC, PARTITION, offset, 0, 0, KEY, m.tobytes(), None, 0, 0, headers(len(m))
            )
            for offset, m in enumerate(messages)
            if not 5 <= offset <= 7
        ]

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def assign(self, tps: Any) -> None: ...
    async def seek_to_beginning(self, *tps: Any) -> None: ...

    async def getmany(self, *tps: Any, **kwargs: Any) -> dict[Any, list[Any]]:
        records, self.records = self.records, []
        return {tps[0]: records}


def test_a_rebuild_reports_progress_and_gaps(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    messages = clx5_messages()[:10]
    monkeypatch.setattr(app_module, "make_consumer", lambda *a, **k: _GappedConsumer(messages))
    monkeypatch.setattr(app_module, "REBUILD_PROGRESS_EVERY_S", 0.0)
    books = PartitionBooks(make_settings(topics={"records": {"name": TOPIC}}))
    with caplog.at_level(logging.INFO, logger="book_processor"):
        publisher = asyncio.run(books.rebuild(PARTITION, 10))
    assert publisher.next_offset == 10
    assert "offsets 5-7 are gone" in caplog.text
    assert f"rebuilding partition {PARTITION}: 10 of 10 messages (100%)" in caplog.text
