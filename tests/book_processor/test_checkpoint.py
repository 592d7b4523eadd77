"""book_processor.checkpoint: a restored publisher continues exactly as an uninterrupted one, and
a checkpoint that cannot be trusted is skipped; PartitionBooks.rebuild resumes from one on a real
broker and falls back to offset 0 when the topic no longer holds the fingerprinted message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from book_processor.app import PartitionBooks
from book_processor.checkpoint import CheckpointStore, fingerprint
from book_processor.publishing import BookPublisher, Published
from mbo_core import metrics
from mbo_core.dbn import open_mbo
from mbo_core.kafka import make_producer
from mbo_core.settings import Settings
from mbo_core.topics import TopicSpec, ensure_topics
from tests.book_processor.test_publishing import KEY, SECOND, chunks, headers
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
    assert load(store, 6) is None  # none at that offset


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
