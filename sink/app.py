"""The sink stage: Kafka (records, bbo, snapshots topics) -> ClickHouse, at least once, idempotent.

One aiokafka consumer in the sink's group reads the three topics. Messages are decoded
(`sink.decode`) into per-table batches; a batch is inserted when it holds
`MBO_PIPELINE__SINK_BATCH_RECORDS` rows or its oldest message has waited
`MBO_PIPELINE__SINK_FLUSH_MS`, and only THEN are the offsets of exactly the messages it holds
committed. So a crash loses nothing (uncommitted messages are read again) and may insert rows
twice: every row's key is its source position, ReplacingMergeTree collapses the copies, and
exact reads use FINAL.

* A partition's topic maps to one table, so the batch of a table owns the uncommitted offsets
  of its partitions; messages without rows (end-of-stream markers, malformed messages, which
  are copied to the dead-letter topic first: mbo_core/wire/dead_letter.py) are committed with
  the next insert of their table.
* One insert is in flight at a time, in a worker thread (the ClickHouse client is
  synchronous): the next batch is consumed and decoded meanwhile, and commits keep insert order.
* An insert that fails for a transient reason (connection, server overload) drops the batch
  and what was consumed after it on the same topic, rewinds those partitions to the batch's
  first offsets and re-reads them after a backoff (0.5 s doubling to 10 s). A refused insert
  (the server rejects the data or schema) stops the sink with an error: retrying would send
  the same block.
* On a rebalance the batches are inserted and committed before the group moves on; if that
  fails they are dropped uncommitted, and whoever owns the partitions next reads them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import IllegalStateError, KafkaError
from clickhouse_connect.driver.client import Client

from mbo_core.errors import MboError
from mbo_core.kafka.dead_letters import note_refusal
from mbo_core.kafka.topics import ensure_topics
from mbo_core.metrics import (
    BATCH_RECORDS,
    CONSUMER_LAG,
    END_TO_END_SECONDS,
    MESSAGES_IN,
    RECORDS_IN,
)
from mbo_core.settings import Settings
from mbo_core.storage.clickhouse import apply_schema, connect
from mbo_core.wire import MalformedMessage
from sink.decode import TABLES, Decoded, EventRows, Kind, RecordChunk, decode_message
from sink.writer import InsertError, InsertResult, check_tables, insert_events, insert_records

log = logging.getLogger(__name__)

STAGE = "sink"
#: Longest single wait in getmany: bounds how late a stop request or a due flush is noticed.
POLL_MS = 200
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
#: Most bytes fetched per partition per request (aiokafka's default is 1 MiB). Measured with 1M
#: CLX5 records in 1000-record messages on one partition: 1.5M records/s consumed at 1 MiB,
#: 2.0M at 8 MiB. Bounded memory: at most this per assigned partition is buffered.
FETCH_PARTITION_BYTES = 8 * 1024 * 1024


@dataclass
class SinkSummary:
    """What one run_sink call did."""

    messages: int = 0
    dead_lettered: int = 0  # malformed messages copied to the dead-letter topic, committed past
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES.values(), 0))
    inserts: int = 0
    commits: int = 0
    insert_failures: int = 0  # transient failures that were retried
    seconds: float = 0.0  # the whole call, group join and idle wait included
    active_seconds: float = 0.0  # from the first message consumed to the last insert

    @property
    def records(self) -> int:
        return self.rows[TABLES[Kind.RECORDS]]

    @property
    def records_per_s(self) -> float:
        return self.records / self.active_seconds if self.active_seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"sink: {self.messages:,} messages, {self.records:,} MBO records, "
            f"{self.rows[TABLES[Kind.BBO]]:,} BBO rows, "
            f"{self.rows[TABLES[Kind.SNAPSHOT]]:,} snapshots in {self.inserts:,} inserts "
            f"({self.records_per_s:,.0f} records/s while busy), {self.dead_lettered:,} malformed "
            f"messages dead-lettered, {self.insert_failures:,} insert retries, "
            f"{self.seconds:.1f} s"
        )


@dataclass
class _Batch:
    """The not yet inserted rows of one table and the offsets they will allow to commit."""

    kind: Kind
    parts: list[tuple[TopicPartition, Decoded]] = field(default_factory=list)
    rows: int = 0
    first: dict[TopicPartition, int] = field(default_factory=dict)
    last: dict[TopicPartition, int] = field(default_factory=dict)
    since: float | None = None  # monotonic time its oldest message arrived

    def add(self, tp: TopicPartition, offset: int, decoded: Decoded, now: float) -> None:
        if decoded is not None:
            self.parts.append((tp, decoded))
            self.rows += decoded.rows
        self.first.setdefault(tp, offset)
        self.last[tp] = offset
        if self.since is None:
            self.since = now

    @property
    def empty(self) -> bool:
        return not self.last

    def due(self, now: float, max_rows: int, max_wait_s: float) -> bool:
        return self.rows >= max_rows or (self.since is not None and now - self.since >= max_wait_s)

    def keep_only(self, partitions: set[TopicPartition]) -> _Batch:
        """The part of this batch that belongs to `partitions`."""
        kept = _Batch(self.kind, since=self.since)
        for tp, decoded in self.parts:
            if tp in partitions:
                kept.parts.append((tp, decoded))
                kept.rows += decoded.rows if decoded is not None else 0
        kept.first = {tp: o for tp, o in self.first.items() if tp in partitions}
        kept.last = {tp: o for tp, o in self.last.items() if tp in partitions}
        if kept.empty:
            kept.since = None
        return kept


class DeadLetterCopier:
    """Copies refused messages to the dead-letter topic (mbo_core/wire/dead_letter.py) and
    waits for the broker's ack. Its producer starts on the first one: most runs have none."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topics.dead_letter.name
        self._producer: AIOKafkaProducer | None = None

    async def send(self, message: ConsumerRecord, error: MalformedMessage) -> None:
        copy_headers = note_refusal(STAGE, message.topic, message.partition, message.offset,
                                    message.key, message.headers, error)  # fmt: skip
        if self._producer is None:
            from mbo_core.kafka.clients import make_producer  # noqa: PLC0415

            producer = make_producer(self.settings, "sink-dead-letter")
            await producer.start()
            self._producer = producer
        await self._producer.send_and_wait(
            self.topic,
            message.value,
            key=message.key,
            headers=copy_headers,
        )

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def _insert(client: Client, batch: _Batch) -> InsertResult:
    decoded = [part for _, part in batch.parts]
    if batch.kind is Kind.RECORDS:
        return insert_records(client, [p for p in decoded if isinstance(p, RecordChunk)])
    return insert_events(client, [p for p in decoded if isinstance(p, EventRows)])


class _Sink:
    def __init__(
        self,
        settings: Settings,
        client: Client,
        consumer: AIOKafkaConsumer,
        on_flush: Callable[[SinkSummary], None] | None,
        dead_letters: DeadLetterCopier,
    ) -> None:
        self.client = client
        self.consumer = consumer
        self.dead_letters = dead_letters
        topics = settings.topics
        self.kinds = {
            topics.records.name: Kind.RECORDS,
            topics.bbo.name: Kind.BBO,
            topics.snapshots.name: Kind.SNAPSHOT,
        }
        self.max_rows = settings.pipeline.sink_batch_records
        self.max_wait_s = settings.pipeline.sink_flush_ms / 1000
        self.batches = {kind: _Batch(kind) for kind in Kind}
        self.assigned: set[TopicPartition] = set()
        self.lock = asyncio.Lock()
        self.summary = SinkSummary()
        self.last_activity = time.monotonic()
        self.first_message_at: float | None = None
        self.backoff_s = 0.0
        self.paused_until = 0.0  # after a transient insert failure, consume again from then
        self.inflight: asyncio.Task[None] | None = None
        self.on_flush = on_flush
        self.fatal: BaseException | None = None
        self.epoch = 0  # rebalances so far
        self.rewound: set[TopicPartition] = set()  # rewound during the current take()

    # ------------------------------------------------------------------ consuming

    async def take(
        self, fetched: dict[TopicPartition, list[ConsumerRecord]], stop: asyncio.Event
    ) -> None:
        """Add fetched messages to their tables' batches, starting a batch's insert as soon as
        it holds max_rows (which may await the insert before).

        While awaiting, positions may jump: a failed insert rewinds its partitions (their
        fetched messages still in hand are stale: skipped, they come again), a rebalance resets
        every partition to its committed offset (all in hand is stale: stop taking). Once stop
        is set the rest is left untaken too: uncommitted, so read again next time."""
        self.rewound.clear()  # rewinds before this fetch: aiokafka already dropped that data
        epoch = self.epoch
        for tp, messages in fetched.items():
            kind = self.kinds[tp.topic]
            now = time.monotonic()
            taken: list[ConsumerRecord] = []
            for message in messages:
                if tp in self.rewound:
                    break
                await self.add(kind, tp, message, now)
                taken.append(message)
                if self.batches[kind].rows >= self.max_rows:
                    async with self.lock:
                        await self.submit(kind, retry=True)
                    if stop.is_set() or epoch != self.epoch:
                        break
            self.took(tp, taken, now)
            if stop.is_set() or epoch != self.epoch:
                return

    async def add(
        self, kind: Kind, tp: TopicPartition, message: ConsumerRecord, now: float
    ) -> None:
        offset: int = message.offset
        try:
            decoded = decode_message(
                kind, tp.partition, offset, message.value, message.headers, message.key
            )
        except MalformedMessage as exc:
            # Retrying cannot fix a malformed message: it goes to the dead-letter topic whole
            # (acked before its offset can be committed) and the stream goes on.
            await self.dead_letters.send(message, exc)
            self.summary.dead_lettered += 1
            decoded = None
        if isinstance(decoded, RecordChunk):
            RECORDS_IN.labels(stage=STAGE).inc(decoded.rows)
        self.batches[kind].add(tp, offset, decoded, now)

    def took(self, tp: TopicPartition, messages: list[ConsumerRecord], now: float) -> None:
        if not messages:
            return
        self.summary.messages += len(messages)
        self.last_activity = now
        if self.first_message_at is None:
            self.first_message_at = now
        MESSAGES_IN.labels(stage=STAGE, topic=tp.topic).inc(len(messages))
        highwater = self.consumer.highwater(tp)
        if highwater is not None:
            # The fetch's high watermark: the lag costs no extra request.
            CONSUMER_LAG.labels(stage=STAGE, topic=tp.topic, partition=str(tp.partition)).set(
                max(highwater - messages[-1].offset - 1, 0)
            )

    def due(self) -> list[Kind]:
        now = time.monotonic()
        return [k for k, b in self.batches.items() if b.due(now, self.max_rows, self.max_wait_s)]

    def poll_timeout_ms(self, idle_deadline: float | None) -> int:
        now = time.monotonic()
        wait = POLL_MS / 1000
        for batch in self.batches.values():
            if batch.since is not None:
                wait = min(wait, batch.since + self.max_wait_s - now)
        if idle_deadline is not None:
            wait = min(wait, idle_deadline - now)
        return max(int(wait * 1000), 0)

    # ------------------------------------------------------------------ flushing
    #
    # One insert is in flight at a time (a task), so the main loop keeps consuming and decoding
    # the next batch while ClickHouse writes the previous one; commits therefore happen in
    # insert order. `lock` serialises starting and awaiting inserts between the main loop and
    # the rebalance listener.

    def pending(self) -> bool:
        return self.inflight is not None or any(not b.empty for b in self.batches.values())

    async def submit(self, kind: Kind, *, retry: bool) -> None:
        """Start inserting a table's batch once the insert in flight (if any) is done.
        retry: on a transient failure, re-read its messages after a backoff (the main loop);
        else leave them uncommitted (rebalance, stop). Caller holds the lock."""
        await self.drain()
        batch = self.batches[kind]
        if batch.empty:
            return
        self.batches[kind] = _Batch(kind)
        self.inflight = asyncio.create_task(self.write(batch, retry=retry))

    async def drain(self) -> None:
        """Wait for the insert in flight; raises InsertError if ClickHouse refused it."""
        task, self.inflight = self.inflight, None
        if task is not None:
            await task

    async def write(self, batch: _Batch, *, retry: bool) -> None:
        """Insert a batch, THEN commit its offsets."""
        if batch.parts:
            try:
                result = await asyncio.to_thread(_insert, self.client, batch)
            except InsertError as exc:
                if not exc.retryable:
                    raise
                self.failed(batch, exc, retry=retry)
                return
            self.record(batch, result)
        await self.commit(batch.last)
        if self.on_flush is not None:
            self.on_flush(self.summary)

    def failed(self, batch: _Batch, exc: InsertError, *, retry: bool) -> None:
        self.summary.insert_failures += 1
        # Messages of the same partitions consumed since must not be committed before the
        # failed ones are in: drop them too and read everything again from the failed batch.
        newer = self.batches[batch.kind]
        self.batches[batch.kind] = _Batch(batch.kind)
        if not retry:
            log.warning("%s; its messages stay uncommitted and will be read again", exc)
            return
        restart = {**newer.first, **batch.first}  # the failed batch's offsets come first
        log.info("rewinding %s", _describe(restart))
        self.rewound.update(restart)
        for tp, offset in restart.items():
            if tp in self.assigned:
                with contextlib.suppress(IllegalStateError):  # revoked meanwhile
                    self.consumer.seek(tp, offset)
        self.backoff_s = min(max(self.backoff_s * 2, BACKOFF_FIRST_S), BACKOFF_MAX_S)
        self.paused_until = time.monotonic() + self.backoff_s
        # The rewound messages are still to be read: not idle.
        self.last_activity = self.paused_until
        log.warning("%s; re-reading its messages in %.1f s", exc, self.backoff_s)

    def record(self, batch: _Batch, result: InsertResult) -> None:
        self.backoff_s = 0.0
        summary = self.summary
        summary.inserts += 1
        summary.rows[result.table] += result.rows
        if self.first_message_at is not None:
            summary.active_seconds = time.monotonic() - self.first_message_at
        if batch.kind is Kind.RECORDS:
            BATCH_RECORDS.labels(stage=STAGE).observe(result.rows)
        now_ns = time.time_ns()
        latency = END_TO_END_SECONDS.labels(stage=STAGE, kind=batch.kind.value)
        for _, part in batch.parts:
            if part is not None and part.sent_ns > 0:
                latency.observe(max(now_ns - part.sent_ns, 0) / 1e9)
        log.debug("inserted %d rows into %s in %.3fs", result.rows, result.table, result.seconds)

    async def commit(self, last: dict[TopicPartition, int]) -> None:
        offsets = {tp: offset + 1 for tp, offset in last.items() if tp in self.assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # The rows are in ClickHouse; whoever reads these messages again inserts the same
            # keys, which collapse. Nothing is lost by not committing.
            log.warning("commit of %s failed: %s", _describe(offsets), exc)
            return
        self.summary.commits += 1

    async def submit_due(self) -> None:
        async with self.lock:
            for kind in self.due():
                await self.submit(kind, retry=True)

    async def surface(self) -> None:
        """Collect a finished insert, raising if ClickHouse refused it."""
        if self.inflight is not None and self.inflight.done():
            async with self.lock:
                if self.inflight is not None and self.inflight.done():
                    await self.drain()

    async def flush_all(self) -> None:
        """Insert and commit everything consumed (once: a failure leaves it uncommitted)."""
        async with self.lock:
            for kind in Kind:
                await self.submit(kind, retry=False)
            await self.drain()

    # ------------------------------------------------------------------ rebalancing

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self.flush_all()
        except Exception as exc:
            # aiokafka would only log an exception of the listener: hand it to the main loop.
            self.fatal = exc
        finally:
            # Whatever was not flushed is re-read from the committed offsets after the rebalance.
            for kind in Kind:
                self.batches[kind] = _Batch(kind)
            self.assigned -= revoked
            self.epoch += 1

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned = set(assigned)
        self.last_activity = time.monotonic()
        for kind, batch in self.batches.items():
            self.batches[kind] = batch.keep_only(self.assigned)
        log.info("assigned %s", _describe(assigned))


def _describe(partitions: Iterable[TopicPartition] | dict[TopicPartition, int]) -> str:
    if isinstance(partitions, dict):
        return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in sorted(partitions.items()))
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "nothing"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: _Sink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.sink.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.sink.on_assigned(set(assigned))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_sink(
    settings: Settings,
    *,
    stop: asyncio.Event,
    idle_exit_s: float | None = None,
    client: Client | None = None,
    on_flush: Callable[[SinkSummary], None] | None = None,
) -> SinkSummary:
    """Consume the records, bbo and snapshots topics into ClickHouse until `stop` is set (or,
    with idle_exit_s, until nothing arrived for that long); returns what it did.

    client: an open ClickHouse client to use (and leave open), e.g. to share the process's chDB
    engine with the API; None: connect(settings) and close it at the end. Creates the topics and
    applies the schema first. on_flush(summary) is called after each insert and its commit (tests
    use it to stop mid-stream). Raises MboError if ClickHouse refuses an insert.
    """
    started = time.monotonic()
    own_client = client is None
    ch = connect(settings) if client is None else client
    try:
        await ensure_topics(settings)
        await asyncio.to_thread(apply_schema, ch)
        await asyncio.to_thread(check_tables, ch)
        summary = await _consume(settings, ch, stop, idle_exit_s, on_flush)
    finally:
        if own_client:
            ch.close()
    summary.seconds = time.monotonic() - started
    log.info(summary.line())
    return summary


def consumer_overrides(settings: Settings) -> dict[str, int]:
    """The sink consumer's own options on top of mbo_core.kafka.clients's."""
    return {
        # Large fetches: a partition's records arrive in a few MiB per round trip, not 1 MiB.
        "max_partition_fetch_bytes": FETCH_PARTITION_BYTES,
        # Fetches that gather data (the sink inserts about once a second anyway): one round
        # trip per message cost the broker and the sink more than the inserts.
        "fetch_min_bytes": settings.kafka.sink_fetch_min_bytes,
        "fetch_max_wait_ms": settings.kafka.sink_fetch_max_wait_ms,
    }


async def _consume(
    settings: Settings,
    client: Client,
    stop: asyncio.Event,
    idle_exit_s: float | None,
    on_flush: Callable[[SinkSummary], None] | None,
) -> SinkSummary:
    from mbo_core.kafka.clients import make_consumer  # noqa: PLC0415 (keeps `import sink.app` light)

    topics = settings.topics
    names = [topics.records.name, topics.bbo.name, topics.snapshots.name]
    consumer = make_consumer(
        settings, STAGE, group_id=settings.kafka.sink_group_id, **consumer_overrides(settings)
    )
    dead_letters = DeadLetterCopier(settings)
    sink = _Sink(settings, client, consumer, on_flush, dead_letters)
    consumer.subscribe(names, listener=_Listener(sink))
    try:
        await consumer.start()
        log.info(
            "sink consuming %s as group %s into %s database %s",
            ", ".join(names),
            settings.kafka.sink_group_id,
            settings.clickhouse_url,
            client.database,
        )
        while not stop.is_set():
            if sink.fatal is not None:
                raise sink.fatal
            await sink.surface()
            now = time.monotonic()
            if now < sink.paused_until:
                await _wait(stop, sink.paused_until - now)
                continue
            idle_deadline = None if idle_exit_s is None else sink.last_activity + idle_exit_s
            if idle_deadline is not None and now >= idle_deadline:
                if not sink.pending():
                    log.info("nothing consumed for %.1f s: stopping", idle_exit_s)
                    break
                idle_deadline = None
            fetched = await consumer.getmany(timeout_ms=sink.poll_timeout_ms(idle_deadline))
            await sink.take(fetched, stop)
            if sink.due():
                await sink.submit_due()
        if sink.fatal is not None:
            raise sink.fatal
        # Stop: whatever was consumed goes in (once; on failure it stays uncommitted).
        await sink.flush_all()
    except KafkaError as exc:
        raise MboError(
            f"Kafka consumer of group {settings.kafka.sink_group_id} failed: {exc}"
        ) from exc
    finally:
        if sink.inflight is not None:
            # Only after an error: let the insert in flight finish (it commits only its own).
            with contextlib.suppress(Exception):
                await sink.inflight
        await consumer.stop()
        await dead_letters.stop()
    return sink.summary
