"""The book processor: a faust-streaming app that rebuilds books from the records topic.

One agent consumes the records topic (raw bytes, keyed by instrument) through the consumer
group `MBO_KAFKA__PROCESSOR_GROUP_ID`; several workers share its partitions. For each records
message the partition's `BookPublisher` applies the records and the agent sends what it returns:
one BBO message and any snapshots (mbo_core/wire/ has the formats), each cut into several when
it exceeds one produce request.

Correctness does not rest on Faust's exactly-once or table recovery (neither works on every
broker): the state of a partition is rebuilt from the records topic itself. When the agent meets
a partition's message at an offset its publisher did not expect (a new assignment, a restart, a
rebalance), it first re-reads that partition up to that message with a plain consumer,
publishing nothing, then goes on: from offset 0, or from the newest usable checkpoint of the
partition's books that this machine wrote (book_processor.checkpoint). Since a publisher's
output depends only on its input, the messages published after the rebuild are exactly those an
uninterrupted worker would have published; messages redelivered after a crash are published
again, byte-identical, and the sink's keys make them collapse.

A records message that breaks the format (mbo_core.wire.MalformedMessage: bad length, rtype,
action or side code, a key that is not the instrument of its records, an unknown schema version)
changes no book and publishes nothing: the agent copies it to the dead-letter topic
(mbo_core/wire/dead_letter.py), counts it in `mbo_messages_rejected_total`, logs it once and
goes on; a rebuild meets it again and skips it alike (the decision depends on the message
alone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import faust
import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.tables import TableManager

from book_processor.checkpoint import CheckpointStore, fingerprint
from book_processor.publishing import BookPublisher, Published
from mbo_core import metrics
from mbo_core.heap import FREEZE_EVERY_S, HeapSchedule
from mbo_core.kafka.clients import faust_app_kwargs, make_consumer
from mbo_core.kafka.dead_letters import note_refusal
from mbo_core.latency_log import LatencyLog
from mbo_core.settings import Settings
from mbo_core.wire import H_PROCESSED_NS, Encoded, MalformedMessage, instrument_key, split_events

log = logging.getLogger("book_processor")

STAGE = "processor"
#: How long a rebuild waits for the message a checkpoint fingerprinted before giving up on it.
FINGERPRINT_WAIT_S = 10.0
#: Messages a rebuild applies between two returns to the event loop (~1,000 records each).
REBUILD_FETCH = 100
REBUILD_PROGRESS_EVERY_S = 10.0
_QUALITY_EVERY_MESSAGES = 64


def publisher_options(settings: Settings) -> dict[str, int]:
    """How the settings' publishers conflate snapshots (a checkpoint must match them)."""
    pipeline = settings.pipeline
    return {
        "snapshot_interval_ns": pipeline.snapshot_interval_ms * 1_000_000,
        "snapshot_depth": pipeline.snapshot_depth,
    }


class PartitionBooks:
    """The publishers of the partitions this worker holds, rebuilt on demand, and their
    checkpoints (book_processor.checkpoint)."""

    def __init__(self, settings: Settings, checkpoints: CheckpointStore | None = None) -> None:
        self.settings = settings
        self.publishers: dict[int, BookPublisher] = {}
        self.messages = 0
        self.checkpoints = checkpoints
        self._checkpoint_every_s = settings.pipeline.checkpoint_interval_s
        self._checkpointed_at: dict[int, float] = {}
        self._writing: dict[int, asyncio.Task[Path | None]] = {}

    def _new_publisher(self, partition: int) -> BookPublisher:
        return BookPublisher(partition, **publisher_options(self.settings))

    async def publisher_at(self, partition: int, offset: int) -> BookPublisher:
        """The partition's publisher, ready to process the message at `offset`."""
        publisher = self.publishers.get(partition)
        if publisher is None or publisher.next_offset != offset:
            log.info("taking partition %d at offset %d", partition, offset)
            publisher = await self.rebuild(partition, offset)
            self.publishers[partition] = publisher
            self._checkpointed_at[partition] = time.monotonic()
        return publisher

    async def rebuild(self, partition: int, until: int) -> BookPublisher:
        """A publisher that has processed offsets [0, until) of the partition (output dropped):
        from the newest usable checkpoint at or before `until`, else from offset 0."""
        if until == 0:
            return self._new_publisher(partition)
        started = time.perf_counter()
        topic = self.settings.topics.records.name
        tp = TopicPartition(topic, partition)
        consumer = make_consumer(self.settings, "processor-rebuild", group_id=None)
        await consumer.start()
        records = 0
        try:
            consumer.assign([tp])
            publisher = await self._restore(consumer, tp, until) or self._new_publisher(partition)
            resumed_at = publisher.next_offset
            if resumed_at:
                consumer.seek(tp, resumed_at)
            else:
                await consumer.seek_to_beginning(tp)
            reported = time.perf_counter()
            while publisher.next_offset < until:
                batches = await consumer.getmany(tp, timeout_ms=1000, max_records=REBUILD_FETCH)
                for message in batches.get(tp, []):
                    if message.offset >= until:
                        break
                    if message.offset != publisher.next_offset:
                        log.warning(
                            "rebuild of partition %d: offsets %d-%d are gone from %s (retention?); "
                            "its books miss the orders added there",
                            partition,
                            publisher.next_offset,
                            message.offset - 1,
                            topic,
                        )
                    out = publisher.process(
                        message.offset, message.key, message.value, message.headers
                    )
                    records += out.records
                if not batches and publisher.next_offset < until:
                    log.info("rebuild of partition %d waiting for offset %d", partition, until)
                now = time.perf_counter()
                if now - reported >= REBUILD_PROGRESS_EVERY_S:
                    reported = now
                    done = publisher.next_offset - resumed_at
                    log.info(
                        "rebuilding partition %d: %d of %d messages (%.0f%%), %d records, "
                        "%.0f records/s",
                        partition,
                        done,
                        until - resumed_at,
                        100 * done / (until - resumed_at),
                        records,
                        records / (now - started),
                    )
                # The agent's event loop (Faust's timers, the producer) runs between fetches.
                await asyncio.sleep(0)
        finally:
            await consumer.stop()
        metrics.REBUILD_RECORDS.inc(records)
        log.info(
            "rebuilt partition %d from offset %d: %d records (%d messages) in %.2f s",
            partition,
            resumed_at,
            records,
            until - resumed_at,
            time.perf_counter() - started,
        )
        return publisher

    async def _restore(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, until: int
    ) -> BookPublisher | None:
        """The newest checkpoint at or before `until` whose last message is the one in the topic
        at its offset; None if there is none."""
        if self.checkpoints is None:
            return None
        for next_offset in self.checkpoints.offsets(tp.partition):
            if next_offset > until or next_offset == 0:
                continue
            checkpoint = self.checkpoints.load(
                tp.partition, next_offset, **publisher_options(self.settings)
            )
            if checkpoint is None:
                metrics.CHECKPOINTS.labels("rejected").inc()
                continue
            found = await _fingerprint_at(consumer, tp, next_offset - 1)
            if found is None:
                # Retention may have deleted it, or the broker is slow: the file may still be
                # right, so it stays, but it cannot be checked.
                log.warning(
                    "skipping checkpoint %s: the records topic's message at offset %d cannot "
                    "be read to check it",
                    checkpoint.path,
                    next_offset - 1,
                )
                metrics.CHECKPOINTS.labels("rejected").inc()
                continue
            if found != checkpoint.fingerprint:
                log.warning(
                    "removing checkpoint %s: the records topic holds another message at offset "
                    "%d (broker reset or topic recreated?)",
                    checkpoint.path,
                    next_offset - 1,
                )
                self.checkpoints.remove(tp.partition, next_offset)
                metrics.CHECKPOINTS.labels("rejected").inc()
                continue
            log.info("partition %d restored from checkpoint %s", tp.partition, checkpoint.path)
            metrics.CHECKPOINTS.labels("restored").inc()
            return checkpoint.publisher
        return None

    def after_message(self, publisher: BookPublisher, key: Any, value: Any, headers: Any) -> None:
        """Checkpoint the partition's books if it is time (the file is written on a thread)."""
        if self.checkpoints is None or self._checkpoint_every_s <= 0:
            return
        partition = publisher.partition
        now = time.monotonic()
        if now - self._checkpointed_at.get(partition, now) < self._checkpoint_every_s:
            return
        writing = self._writing.get(partition)
        if writing is not None and not writing.done():
            return
        self._checkpointed_at[partition] = now
        try:
            # Encoded here, between two messages, so the state cannot change while it is pickled.
            content = self.checkpoints.encode(publisher, fingerprint(key, value, headers))
        except Exception:  # a shortcut must never stop the agent
            log.exception("cannot encode a checkpoint of partition %d", partition)
            return
        self._writing[partition] = asyncio.create_task(
            asyncio.to_thread(
                self._write, self.checkpoints, partition, publisher.next_offset, content
            )
        )

    @staticmethod
    def _write(
        store: CheckpointStore, partition: int, next_offset: int, content: bytes
    ) -> Path | None:
        path = store.write(partition, next_offset, content)
        if path is not None:
            metrics.CHECKPOINTS.labels("written").inc()
        return path

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.publishers.pop(partition, None)
            self._checkpointed_at.pop(partition, None)


async def _fingerprint_at(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int
) -> str | None:
    """The fingerprint of the partition's message at `offset`; None if it cannot be read (gone,
    or not fetched within FINGERPRINT_WAIT_S)."""
    consumer.seek(tp, offset)
    deadline = time.monotonic() + FINGERPRINT_WAIT_S
    while time.monotonic() < deadline:
        batches = await consumer.getmany(tp, timeout_ms=500, max_records=1)
        for message in batches.get(tp, []):
            if message.offset != offset:
                return None  # the offset is gone: the consumer was reset elsewhere
            return fingerprint(message.key, message.value, message.headers)
    return None


class _TablelessManager(TableManager):
    """Faust's table manager without the second it waits at every start for tables to register.

    This app has no tables (a partition's books live in the agent and in checkpoints), and an
    app's tables are declared before it starts, so the wait (`TableManager.on_start` sleeps
    1 s, unconditionally) held back the consumer's subscription, and with it the whole
    pipeline's start, by a second. An app with tables gets Faust's own start.
    """

    async def on_start(self) -> None:
        if len(self):
            await super().on_start()
            return
        if not self.should_stop:  # as Faust's, after its sleep
            await self._update_channels()
            await self.recovery.start()


def _skip_venusian() -> None:
    """Faust registers each agent and timer with venusian for `app.discover()`, which this app
    does not use (autodiscover is off: its agent and timer are defined here). The registration
    reads the caller's source (inspect.getframeinfo, whose inspect.getmodule takes the realpath
    of every module loaded): ~0.2 CPU-s of a forked worker's start under py-spy, for nothing.
    """
    from faust.utils import venusian  # noqa: PLC0415

    def attach(*args: Any, **kwargs: Any) -> None:
        return None

    venusian.attach = attach


def _use_fetch_wait(fetch_max_wait_ms: int) -> None:
    """Make Faust's consumer hold fetches as long as MBO_KAFKA__PROCESSOR_FETCH_MAX_WAIT_MS says.

    Faust builds its aiokafka consumer with fetch_max_wait_ms=1500 written into the code, with no
    setting. Kafka answers a held fetch as soon as data arrives, so the value bounds only idle
    polling; this keeps it a setting like every other consumer's. aiokafka reads the value when
    the consumer starts, so setting it on the consumer Faust has just built is enough.
    """
    from faust.transport.drivers import aiokafka as faust_aiokafka  # noqa: PLC0415

    thread = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread, "_mbo_fetch_wait", None) == fetch_max_wait_ms:
        return
    build = getattr(thread, "_mbo_build", thread._create_worker_consumer)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = build(self, transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms
        return consumer

    thread._mbo_build = build  # type: ignore[attr-defined]
    thread._mbo_fetch_wait = fetch_max_wait_ms  # type: ignore[attr-defined]
    thread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def faust_dir(settings: Settings) -> Path:
    """Where Faust keeps a worker's local state: `<data dir>/processor/<group id>`."""
    return settings.processor_dir / settings.kafka.processor_group_id


def create_app(settings: Settings) -> faust.App:
    """The Faust app of one processor worker."""
    _use_fetch_wait(settings.kafka.processor_fetch_max_wait_ms)
    _skip_venusian()
    faust_dir(settings).parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last
    app = faust.App(
        settings.kafka.processor_group_id,
        web_enabled=False,
        # Faust's default is "<app id>-data" in the working directory, which littered every
        # directory a worker was started from (and a read-only one stopped it). Faust formats
        # the path with str.format, so braces in it are escaped.
        datadir=str(faust_dir(settings)).replace("{", "{{").replace("}", "}}"),
        # Offsets are committed after the sends of the messages acked; commit often so a restart
        # re-reads little.
        broker_commit_every=1000,
        broker_commit_interval=0.5,
        stream_wait_empty=True,
        TableManager=_TablelessManager,
        **faust_app_kwargs(settings),
    )
    topics = settings.topics
    records_topic = app.topic(
        topics.records.name, key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw",
    )  # fmt: skip
    books = PartitionBooks(settings, CheckpointStore(faust_dir(settings) / "checkpoints",
                                                     topics.records.name))  # fmt: skip
    stage_metrics = _StageMetrics(topics.records.name, topics.bbo.name, topics.snapshots.name)
    dead_letters = _DeadLetterCopier(app.producer, topics.dead_letter.name)
    log_dir = settings.pipeline.latency_log_dir
    latencies = LatencyLog(log_dir) if log_dir is not None else None
    outputs = _Outputs(
        app.producer,
        topics.bbo.name,
        topics.snapshots.name,
        max_bytes=settings.kafka.max_request_size,
        metrics=stage_metrics,
        latencies=latencies,
    )

    @app.agent(records_topic)
    async def process(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            publisher = await books.publisher_at(message.partition, message.offset)
            started = time.perf_counter()
            headers = _headers(message)
            out = publisher.process(message.offset, message.key, message.value, headers)
            metrics.BOOK_APPLY_SECONDS.observe(time.perf_counter() - started)
            books.after_message(publisher, message.key, message.value, headers)
            books.messages += 1
            if out.rejected is not None:
                await dead_letters.send(message, headers, out.rejected)
                continue
            await outputs.send(out, message)
            if books.messages % _QUALITY_EVERY_MESSAGES == 0 or out.end_of_stream:
                _export_quality(publisher, out.instrument_id)

    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = kwargs.get("revoked", args[0] if args else set())
        books.forget({tp.partition for tp in revoked if tp.topic == topics.records.name})

    app.on_partitions_revoked.connect(on_revoked)

    heap = HeapSchedule()

    @app.timer(interval=FREEZE_EVERY_S)  # type: ignore[untyped-decorator]  # faust: unannotated
    async def keep_heap_frozen() -> None:
        # Full collections of the whole heap stopped the agent for 25-100 ms (mbo_core.heap).
        heap.tick()
        if latencies is not None:
            latencies.flush()

    if latencies is not None:

        async def flush_latencies(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            latencies.flush()

        app.on_before_shutdown.connect(flush_latencies)

    return app


def warm_up() -> Published:
    """Load the compiled book kernel now, not on the first message (~0.2 s on the first records
    message otherwise: every message sent in that time waited for it). A real records message
    of one event, a bid and an ask, through the whole path: validation, the kernel, a BBO
    change and a snapshot encoded. Returns what it published (never refused: tested)."""
    from mbo_core.records import MBO_DTYPE, MBO_LENGTH_WORDS, RTYPE_MBO  # noqa: PLC0415

    publisher = BookPublisher(0, snapshot_interval_ns=1_000_000_000, snapshot_depth=10)
    records = np.zeros(2, dtype=MBO_DTYPE)
    records["rtype"], records["length"] = RTYPE_MBO, MBO_LENGTH_WORDS
    records["action"], records["side"] = ord("A"), [ord("B"), ord("A")]
    records["price"], records["size"], records["order_id"] = (
        [1_000_000_000, 1_010_000_000],
        1,
        [1, 2],
    )
    records["flags"] = [0, 128]  # one event: F_LAST on its last record
    return publisher.process(0, b"0", records.tobytes(), None)


def _headers(message: Any) -> list[tuple[str, bytes]]:
    headers = message.headers or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


class _DeadLetterCopier:
    """Copies the records messages the publishers refused to the dead-letter topic
    (mbo_core/wire/dead_letter.py). Like the outputs, the copy is handed to the producer's
    batch: Faust flushes the producer before it commits the message's offset."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(
        self, message: Any, headers: list[tuple[str, bytes]], error: MalformedMessage
    ) -> None:
        copy_headers = note_refusal(STAGE, message.topic, message.partition, message.offset,
                                    message.key, headers, error)  # fmt: skip
        await self._producer.send(self._topic, message.key, message.value, None, None, copy_headers)


class _Partitions:
    """The output partition of each (topic, instrument key), hashed once.

    The client would hash the key (murmur2, in Python) on every send; the answer never changes.
    """

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._cache: dict[tuple[str, bytes], int] = {}

    def __call__(self, topic: str, key: bytes) -> int:
        partition = self._cache.get((topic, key))
        if partition is None:
            partition = self._producer.key_partition(topic, key).partition
            self._cache[(topic, key)] = partition
        return partition


class _StageMetrics:
    """The processor's metric series, with their labels bound once (labels() costs a lookup)."""

    def __init__(self, records_topic: str, bbo_topic: str, snapshots_topic: str) -> None:
        self.messages_in = metrics.MESSAGES_IN.labels(STAGE, records_topic)
        self.records_in = metrics.RECORDS_IN.labels(STAGE)
        self.bbo_messages = metrics.MESSAGES_OUT.labels(STAGE, bbo_topic)
        self.snapshot_messages = metrics.MESSAGES_OUT.labels(STAGE, snapshots_topic)
        self.bbo_events = metrics.EVENTS_OUT.labels(STAGE, "bbo")
        self.snapshot_events = metrics.EVENTS_OUT.labels(STAGE, "snapshot")
        self.bbo_latency = metrics.END_TO_END_SECONDS.labels(STAGE, "bbo")
        self.snapshot_latency = metrics.END_TO_END_SECONDS.labels(STAGE, "snapshot")


class _Outputs:
    """Hands a records message's outputs to the Kafka producer's batches without waiting for
    their delivery, each cut to fit one produce request (`split_events`: a flat-out chunk's BBO
    rows can exceed it).

    Faust's own topic.send() goes through a buffer that sends one message at a time (~1 ms
    each here); Producer.send() appends to the client's batch and returns. At-least-once still
    holds: Faust flushes the producer before it commits any offset, so an input offset is never
    committed before the messages published for it were delivered.
    """

    def __init__(
        self,
        producer: Any,
        bbo_topic: str,
        snapshots_topic: str,
        *,
        max_bytes: int,
        metrics: _StageMetrics,
        latencies: LatencyLog | None,
    ) -> None:
        self._producer = producer
        self._partitions = _Partitions(producer)
        self._bbo_topic = bbo_topic
        self._snapshots_topic = snapshots_topic
        self._max_bytes = max_bytes
        self._metrics = metrics
        self._latencies = latencies

    async def send(self, out: Published, message: Any) -> None:
        m = self._metrics
        key = instrument_key(out.instrument_id)
        now_ns = time.time_ns()
        stamp = (H_PROCESSED_NS, str(now_ns).encode())
        sent_ns = _sent_ns(message)
        latency = (now_ns - sent_ns) / 1e9 if sent_ns else None
        m.messages_in.inc()
        m.records_in.inc(out.records)
        for topic, encoded, rows, messages, events, latency_metric in (
            (self._bbo_topic, out.bbo, out.bbo_rows, m.bbo_messages, m.bbo_events,
             m.bbo_latency),
            (self._snapshots_topic, out.snapshots, out.snapshot_count, m.snapshot_messages,
             m.snapshot_events, m.snapshot_latency),
        ):  # fmt: skip
            if encoded is None:
                continue
            partition = self._partitions(topic, key)
            whole = Encoded(encoded.value, [*encoded.headers, stamp])
            for piece in split_events(whole, self._max_bytes):
                await self._producer.send(topic, key, piece.value, partition, None, piece.headers)
                messages.inc()
            events.inc(rows)
            if latency is not None:
                latency_metric.observe(latency)
                if self._latencies is not None:
                    self._latencies.add(sent_ns, now_ns)


def _sent_ns(message: Any) -> int:
    for name, value in _headers(message):
        if name == "sent-ns":
            return int(value or 0)
    return 0


def _export_quality(publisher: BookPublisher, instrument_id: int) -> None:
    for counter, n in publisher.quality(instrument_id).items():
        metrics.DATA_QUALITY.labels(str(instrument_id), counter).set(n)
