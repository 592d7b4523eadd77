"""Replaying a DBN MBO file into the records topic (`mbo produce`, and `produce_file` for code).

Each Kafka message is one `Chunk` (producer.chunking): whole events of one instrument as raw
56-byte DBN records, keyed by the instrument id, with the headers of
`mbo_core.wire.records_headers`. After the last chunk of each instrument, an end-of-stream
marker (empty value, `end-of-stream: 1`) keyed by it. The format is documented in
docs/producer.md and mbo_core/wire/records.py.

The replay runs in time slices: at each slice the pacer (producer.pacing) says how many more
records are due; they are fed to the chunker, full chunks are sent at once and open chunks once
their oldest record has waited `MBO_PIPELINE__CHUNK_LINGER_MS`. Sends are asynchronous
(aiokafka batches them); every delivery is awaited before the summary is returned, and a failed
delivery raises MboError.

Loops replay the file again after a Clear (action R) of every book seen, so that the books of
the next copy start empty. A set `stop` event (SIGINT/SIGTERM in the CLI) stops reading: the
chunks of complete events are still sent, the records of events still open and the end-of-stream
markers are not, and the summary says `interrupted`.

Every message carries the replay's id and how many records of its instrument the replay has
sent: started again with the same id (its producer was killed, or stopped), a replay resumes
after what the records topic holds of each instrument (producer.resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from mbo_core.dbn import DEFAULT_BATCH_RECORDS, MboFile, open_mbo
from mbo_core.errors import InputError, MboError
from mbo_core.kafka.clients import bootstrap_servers, make_producer, watch_kafka_reachable
from mbo_core.kafka.topics import ensure_topics
from mbo_core.metrics import (
    BATCH_RECORDS,
    MESSAGES_OUT,
    PRODUCER_RATE,
    RECORDS_IN,
    RECORDS_OUT,
    serve_metrics,
)
from mbo_core.records import MBO_DTYPE
from mbo_core.replay_lock import replay_lock
from mbo_core.settings import Settings
from mbo_core.shutdown import run_until_signalled
from mbo_core.wire import end_of_stream_headers, instrument_key, records_headers
from producer.chunking import Chunk, Chunker, FlushSchedule, clear_records, last_of_each_book
from producer.pacing import Pacer, Pacing
from producer.resume import ResumeFilter, ResumePoint, new_replay_id, resume_point

log = logging.getLogger("producer")

STAGE = "producer"
#: File batch when paced: small, so reading the next one never holds a time slice up for long.
PACED_BATCH_RECORDS = 1 << 15
#: Shortest pause between two time slices of a paced replay.
SLICE_S = 0.001
#: Pauses longer than this wait on the stop event, so that a signal ends them at once.
WATCHED_WAIT_S = 0.02
#: A replay whose sends Kafka has not acknowledged for this long fails (the broker is down or
#: unreachable) instead of waiting forever: started again, it resumes (producer.resume).
DELIVERY_STALL_S = 60.0
#: Room for the Kafka record batch and message framing and our headers in a produce request.
REQUEST_OVERHEAD_BYTES = 1024

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class ProduceSummary:
    """What a replay did. records_sent = records_read + clears; unterminated_records of them
    were sent in unterminated tails (events the file never closes)."""

    path: str
    topic: str
    mode: str  # max, rate or speed
    target_rate: float | None  # records/s (mode rate)
    speed: float | None  # x recorded pace (mode speed)
    loops: int  # copies of the file asked for
    copies: int  # copies replayed to their end
    chunk_records: int  # the bound used (MBO_PIPELINE__CHUNK_RECORDS, capped by request size)
    records_read: int  # file records taken into the replay (all copies)
    records_sent: int  # records delivered to Kafka, Clears included
    messages: int  # records messages delivered (end-of-stream markers not counted)
    end_of_stream_markers: int
    clears: int  # Clear records inserted between copies
    #: Records of events without their F_LAST at the end of a copy or at an interruption:
    #: not sent (the book engine would not apply them either).
    unterminated_records: int
    instruments: int
    seconds: float  # from the start of the replay to the last delivery
    records_per_s: float  # records_sent / seconds
    interrupted: bool
    first_sent_ns: int | None  # sent-ns header of the first records message
    last_sent_ns: int | None  # and of the last one
    messages_by_instrument: dict[int, int] = field(default_factory=dict)
    replay_id: str | None = None
    #: Records an earlier producer of the same replay had sent (resumed replays; not counted
    #: in records_sent).
    records_already_sent: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["messages_by_instrument"] = {
            str(key): value for key, value in sorted(self.messages_by_instrument.items())
        }
        return out

    def line(self) -> str:
        """One line for people: what was sent, how fast, and whether it was interrupted."""
        state = "interrupted" if self.interrupted else "done"
        extras = []
        if self.clears:
            extras.append(f"{self.clears:,} clear{'s' if self.clears > 1 else ''}")
        if self.unterminated_records:
            extras.append(
                f"{self.unterminated_records:,} records of events the file never closes, sent "
                "as unterminated tails"
            )
        if self.records_already_sent:
            extras.append(f"resumed after {self.records_already_sent:,} records already sent")
        if self.interrupted and self.replay_id:
            extras.append(f"resume with --replay-id {self.replay_id}")
        tail = f" ({', '.join(extras)})" if extras else ""
        return (
            f"{state}: {self.records_sent:,} records in {self.messages:,} messages "
            f"to {self.topic} in {self.seconds:.2f} s, {self.records_per_s:,.0f} records/s"
            f"{tail}"
        )


def chunk_bound(settings: Settings) -> int:
    """Records per message: MBO_PIPELINE__CHUNK_RECORDS, but never more than one produce
    request may carry (a larger message would be refused by the client)."""
    fits = (settings.kafka.max_request_size - REQUEST_OVERHEAD_BYTES) // MBO_DTYPE.itemsize
    return max(1, min(settings.pipeline.chunk_records, fits))


def time_slice_s(settings: Settings) -> float:
    """Shortest pause between two time slices of a paced replay: a tenth of the chunk linger,
    at least SLICE_S. Records wait for the linger anyway, so such a slice delays none by more
    than that, and a slice costs the same numpy work (a sort of the open chunks) however short."""
    return max(SLICE_S, settings.pipeline.chunk_linger_ms / 1000 / 10)


def flush_schedule(settings: Settings) -> FlushSchedule:
    """When each instrument's chunk leaves in a paced replay or a live session: every chunk
    linger, instruments a time slice apart (FlushSchedule)."""
    linger_s = settings.pipeline.chunk_linger_ms / 1000
    return FlushSchedule(linger_s, phases=max(1, round(linger_s / time_slice_s(settings))))


async def produce_file(
    settings: Settings,
    path: Path,
    *,
    rate: float | None = None,
    speed: float | None = None,
    loops: int = 1,
    progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
    pause: asyncio.Event | None = None,
    replay_id: str | None = None,
) -> ProduceSummary:
    """Replay the DBN MBO file at `path` into the records topic; see the module doc.

    replay_id: this replay's id, written in every message; when the topic already holds
    messages of that id (its producer died), the replay resumes after them (producer.resume).

    At most one of rate (records/s) and speed (x recorded pace); neither: flat out.
    `progress(n)` is called with the number of records taken into the replay since the last
    call. Setting `stop` ends the replay early (interrupted=True, no end-of-stream markers).
    Raises InputError for bad options or input, MboError if Kafka fails, ReplayBusyError (an
    MboError) if another replay into the records topic runs on this machine (mbo_core.replay_lock).
    """
    pacing = Pacing.validate(rate=rate, speed=speed, loops=loops)
    source = open_mbo(path)
    with replay_lock(settings, f"{path.name} at {pacing.describe()}"):
        return await _produce(settings, source, pacing, loops, progress, stop, pause, replay_id)


async def _produce(
    settings: Settings,
    source: MboFile,
    pacing: Pacing,
    loops: int,
    progress: ProgressCallback | None,
    stop: asyncio.Event | None,
    pause: asyncio.Event | None,
    replay_id: str | None,
) -> ProduceSummary:
    await ensure_topics(settings)
    point = None
    if replay_id is None:
        # A new replay: nothing of it can be in the topic yet, so no resume check.
        replay_id = new_replay_id()
    else:
        point = await resume_point(settings, replay_id, lambda: _instrument_ids(source))
        if point.sent:
            log.info(
                "resuming replay %s: the topic holds %d of its records (%d instruments, %d "
                "ended); sending the rest",
                replay_id,
                point.records,
                len(point.sent),
                sum(s.end_of_stream for s in point.sent.values()),
            )
    # Paced, the chunker has already waited its linger for a chunk to fill: the client's own
    # linger (MBO_KAFKA__LINGER_MS) would only add its 2 ms to every record's latency
    # (send -> processor p50 7.0 -> 4.8 ms at 50k records/s, bench.pipeline). Flat out, its
    # batches fill at once anyway.
    overrides = {} if pacing.mode == "max" else {"linger_ms": 0}
    producer = make_producer(settings, STAGE, **overrides)
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise MboError(f"cannot reach Kafka at {bootstrap_servers(settings)}: {exc}") from None
    try:
        replay = _Replay(
            settings,
            source,
            pacing,
            Sender(producer, settings, source.dataset, source.symbols, replay_id, point),
            loops=loops,
            progress=progress,
            stop=stop or asyncio.Event(),
            pause=pause,
        )
        return await replay.run()
    finally:
        await producer.stop()


class Sender:
    """Sends chunks and end-of-stream markers; counts what the broker acknowledged.

    `symbols` (instrument_id -> raw symbol, for the `symbol` header) is read at each send: a
    live session adds to it as the gateway's symbol mappings arrive (producer.live)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        settings: Settings,
        dataset: str,
        symbols: dict[int, str],
        replay_id: str,
        point: ResumePoint | None = None,
    ) -> None:
        self.producer = producer
        self.point = point
        self.replay_id = replay_id
        #: The copy of the file being sent (1, 2, ...): with the id, the run of every message.
        self.copy = 1
        # Records of each instrument the replay has sent (by earlier producers of it too).
        self.instrument_records = (
            {} if point is None else {i: s.records for i, s in point.sent.items()}
        )
        self.topic = settings.topics.records.name
        self.max_request_size = settings.kafka.max_request_size
        self.dataset = dataset
        self.symbols = symbols
        self.inflight: set[asyncio.Future[Any]] = set()
        self.failure: BaseException | None = None
        self.bootstrap = bootstrap_servers(settings)
        #: When Kafka last acknowledged a send, or nothing was waiting (monotonic).
        self.progress_at = time.monotonic()
        self.records = 0
        self.messages = 0
        self.markers = 0
        self.by_instrument: dict[int, int] = {}
        self.first_sent_ns: int | None = None
        self.last_sent_ns: int | None = None
        self._records_out = RECORDS_OUT.labels(stage=STAGE)
        self._messages_out = MESSAGES_OUT.labels(stage=STAGE, topic=self.topic)
        self._batch_records = BATCH_RECORDS.labels(stage=STAGE)

    async def send(self, chunks: Iterable[Chunk], *, unterminated_tail: bool = False) -> None:
        for chunk in chunks:
            await self._send_chunk(chunk, unterminated_tail=unterminated_tail)

    async def send_remaining(self, chunker: Chunker) -> int:
        """Everything the chunker holds, at the end of a copy or of a live run: every complete
        chunk, then the records of events never closed, each instrument's as one message flagged
        as an unterminated tail (raw records for the records table, counted and not applied by
        the processor). Returns the records of those tails."""
        await self.send(chunker.flush())
        unterminated = 0
        for tail in chunker.take_unfinished():
            unterminated += len(tail)
            await self.send([tail], unterminated_tail=True)
        return unterminated

    async def _send_chunk(self, chunk: Chunk, *, unterminated_tail: bool) -> None:
        self.check()
        value = chunk.records.tobytes()
        if len(value) + REQUEST_OVERHEAD_BYTES > self.max_request_size:
            raise MboError(
                f"one event of instrument {chunk.instrument_id} has {len(chunk):,} records "
                f"({len(value):,} bytes), more than one Kafka request may carry: raise "
                f"MBO_KAFKA__MAX_REQUEST_SIZE={self.max_request_size} (and the brokers' "
                "message.max.bytes)"
            )
        sent_ns = time.time_ns()
        sent_before = self.instrument_records.get(chunk.instrument_id, 0)
        self.instrument_records[chunk.instrument_id] = sent_before + len(chunk)
        headers = records_headers(
            dataset=self.dataset,
            symbol=self.symbols.get(chunk.instrument_id),
            sent_ns=sent_ns,
            records=len(chunk),
            unterminated_tail=unterminated_tail,
            replay_id=self.replay_id,
            replay_copy=self.copy,
            instrument_records=sent_before + len(chunk),
        )
        future = await self._produce(instrument_key(chunk.instrument_id), value, headers)
        if self.first_sent_ns is None:
            self.first_sent_ns = sent_ns
        self.last_sent_ns = sent_ns
        records, instrument_id = len(chunk), chunk.instrument_id

        def delivered(done: asyncio.Future[Any]) -> None:
            if self._settle(done):
                self.records += records
                self.messages += 1
                self.by_instrument[instrument_id] = self.by_instrument.get(instrument_id, 0) + 1
                self._records_out.inc(records)
                self._messages_out.inc()
                self._batch_records.observe(records)

        future.add_done_callback(delivered)

    async def end_of_stream(self, instrument_ids: Iterable[int]) -> None:
        for instrument_id in instrument_ids:
            self.check()
            if self.point is not None and self.point.ended(instrument_id):
                continue  # an earlier producer of this replay sent it
            headers = end_of_stream_headers(
                dataset=self.dataset,
                symbol=self.symbols.get(instrument_id),
                sent_ns=time.time_ns(),
                replay_id=self.replay_id,
                replay_copy=self.copy,
                instrument_records=self.instrument_records.get(instrument_id, 0),
            )
            future = await self._produce(instrument_key(instrument_id), b"", headers)

            def delivered(done: asyncio.Future[Any]) -> None:
                if self._settle(done):
                    self.markers += 1

            future.add_done_callback(delivered)

    async def _produce(
        self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        try:
            future: asyncio.Future[Any] = await self.producer.send(
                self.topic, value=value, key=key, headers=headers
            )
        except KafkaError as exc:
            raise MboError(f"cannot send to Kafka topic {self.topic}: {exc!r}") from None
        if not self.inflight:
            self.progress_at = time.monotonic()
        self.inflight.add(future)
        return future

    def _settle(self, done: asyncio.Future[Any]) -> bool:
        """Forget a finished send; True if it was delivered."""
        self.inflight.discard(done)
        self.progress_at = time.monotonic()
        if done.cancelled():
            self.failure = self.failure or asyncio.CancelledError()
            return False
        error = done.exception()
        if error is not None:
            self.failure = self.failure or error
            return False
        return True

    def check(self) -> None:
        if self.failure is not None:
            raise MboError(f"delivery to Kafka topic {self.topic} failed: {self.failure!r}")
        if self.inflight and time.monotonic() - self.progress_at > DELIVERY_STALL_S:
            raise MboError(
                f"Kafka at {self.bootstrap} acknowledged none of {len(self.inflight)} sends for "
                f"{DELIVERY_STALL_S:.0f} s (broker down or unreachable?); the replay resumes "
                "where it stopped when started again with its replay id"
            )

    async def drain(self) -> None:
        """Wait until every message sent so far is acknowledged (or failed), but fail once
        Kafka acknowledged nothing for DELIVERY_STALL_S."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.producer.flush(), DELIVERY_STALL_S)
        while self.inflight:
            self.check()
            await asyncio.wait(list(self.inflight), timeout=1.0)
        self.check()


class _Replay:
    def __init__(
        self,
        settings: Settings,
        source: MboFile,
        pacing: Pacing,
        sender: Sender,
        *,
        loops: int,
        progress: ProgressCallback | None,
        stop: asyncio.Event,
        pause: asyncio.Event | None = None,
    ) -> None:
        self.source = source
        self.pacing = pacing
        self.pacer: Pacer = pacing.pacer()
        self.sender = sender
        self.loops = loops
        self.progress = progress
        self.stop = stop
        self.pause = pause
        self.chunker = Chunker(chunk_bound(settings))
        point = sender.point
        self.already_sent = 0 if point is None else point.records
        #: Drops what an earlier producer of this replay sent (identity when nothing was).
        self.unsent = ResumeFilter(point)
        self.slice_s = time_slice_s(settings)
        self.schedule = flush_schedule(settings)
        self.batch_records = DEFAULT_BATCH_RECORDS if pacing.mode == "max" else PACED_BATCH_RECORDS
        self.books: dict[tuple[int, int], tuple[int, int]] = {}
        self.records_read = 0
        self.clears = 0
        self.unterminated = 0
        self.copies = 0
        self._records_in = RECORDS_IN.labels(stage=STAGE)
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()

    def elapsed(self) -> float:
        return self._loop.time() - self._start

    async def run(self) -> ProduceSummary:
        PRODUCER_RATE.set(self.pacing.rate or 0)
        log.info(
            "replay started: %s -> %s, %s, %d cop%s, chunks of <= %d records",
            self.source.path,
            self.sender.topic,
            self.pacing.describe(),
            self.loops,
            "y" if self.loops == 1 else "ies",
            self.chunker.chunk_records,
            extra={
                "event": "replay_started",
                "file": str(self.source.path),
                "topic": self.sender.topic,
                "mode": self.pacing.mode,
                "rate": self.pacing.rate,
                "speed": self.pacing.speed,
                "loops": self.loops,
                "chunk_records": self.chunker.chunk_records,
            },
        )
        self._start = self._loop.time()
        interrupted = False
        for copy in range(self.loops):
            if not await self._replay_copy():
                interrupted = True
                break
            await self._send_open_chunks_by_turns()
            self.copies += 1
            # Events the file never closes: the next copy (or the end) must not close them.
            self.unterminated += await self.sender.send_remaining(self.chunker)
            self.pacer.end_copy()
            if copy < self.loops - 1:
                # Every chunk of this copy is sent (above): what follows, the Clears first, is
                # the next copy's run.
                self.sender.copy = copy + 2
                clears = clear_records(self.books)
                self.clears += len(clears)
                await self.sender.send(self.chunker.feed(self.unsent(clears)))
        # Interrupted, the records of events still open stay unsent: a replay resumed with the
        # same id sends them with the rest of their events (producer.resume).
        await self.sender.send(self.chunker.flush())
        if not interrupted:
            await self._end_of_stream(sorted({key[0] for key in self.books}))
        await self.sender.drain()
        summary = self._summary(interrupted, self.elapsed())
        log.info(
            "replay %s",
            summary.line(),
            extra={"event": "replay_" + ("interrupted" if interrupted else "finished")}
            | {k: v for k, v in summary.to_json().items() if k != "messages_by_instrument"},
        )
        return summary

    async def _send_open_chunks_by_turns(self) -> None:
        """Paced, at the end of a copy: the open chunks leave at their instruments' turns (within
        one linger), not all at once, which made the processor take them one after the other
        (the last of 8 waited ~8 ms more: bench.pipeline's end-of-run latencies)."""
        if self.pacing.mode == "max":
            return
        while not self.stop.is_set():
            waiting = self.chunker.waiting_instruments()
            leaving = self.schedule.due(waiting, self.elapsed())
            if len(leaving):
                await self.sender.send(self.chunker.flush(instruments=leaving))
            turn = self.schedule.next_due(self.chunker.waiting_instruments())
            if turn is None:
                return
            await asyncio.sleep(max(turn - self.elapsed(), 0.0))

    async def _end_of_stream(self, instrument_ids: list[int]) -> None:
        """The end-of-stream markers; paced, spread over the time slices of one linger like the
        chunks (each makes the processor publish its instrument's final books)."""
        if self.pacing.mode == "max" or not instrument_ids:
            await self.sender.end_of_stream(instrument_ids)
            return
        per_slice = -(-len(instrument_ids) // self.schedule.phases)
        for start in range(0, len(instrument_ids), per_slice):
            if start:
                await asyncio.sleep(self.slice_s)
            await self.sender.end_of_stream(instrument_ids[start : start + per_slice])

    async def _replay_copy(self) -> bool:
        """Replay one copy of the file; False if stopped before its end."""
        batches = self.source.batches(self.batch_records)
        try:
            for whole in batches:
                self.books.update(last_of_each_book(whole))
                batch = self.unsent(whole)
                if len(batch) and not await self._replay_batch(batch):
                    return False
        finally:
            # Leaving early: close the generator now, and with it the file.
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        return True

    async def _replay_batch(self, batch: np.ndarray) -> bool:
        self.pacer.start_batch(batch)
        position, size = 0, len(batch)
        while position < size:
            if self.stop.is_set():
                return False
            if self.pause is not None and self.pause.is_set():
                await self._wait_paused()
                continue
            now = self.elapsed()
            due = self.pacer.due(position, now)
            if due > position:
                await self._take(batch[position:due])
                position = due
            leaving = self.schedule.due(self.chunker.waiting_instruments(), now)
            if len(leaving):
                await self.sender.send(self.chunker.flush(instruments=leaving))
            if position < size:
                await self._pause(position, now)
        # Flat out, the sender task must still get its turn between batches.
        await asyncio.sleep(0)
        return True

    async def _wait_paused(self) -> None:
        """Hold the replay while `pause` is set (or until stop), sending the complete events
        already read so consumers see everything up to the pause; the paused time is taken out
        of the replay clock."""
        assert self.pause is not None
        await self.sender.send(self.chunker.flush())
        paused_at = self._loop.time()
        while self.pause.is_set() and not self.stop.is_set():
            # asyncio.Event has no "wait until cleared": poll, watched by stop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), WATCHED_WAIT_S * 5)
        self._start += self._loop.time() - paused_at

    async def _take(self, records: np.ndarray) -> None:
        count = len(records)
        self.records_read += count
        self._records_in.inc(count)
        if self.progress is not None:
            self.progress(count)
        await self.sender.send(self.chunker.feed(records))

    async def _pause(self, position: int, now: float) -> None:
        """Sleep until the next record is due or an open chunk's time to leave comes,
        whichever is first, but at least one time slice."""
        wake = self.pacer.next_due(position)
        leaves = self.schedule.next_due(self.chunker.waiting_instruments())
        if leaves is not None:
            wake = min(wake, leaves)
        delay = max(wake - now, self.slice_s)
        if delay <= WATCHED_WAIT_S:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), delay)

    def _summary(self, interrupted: bool, seconds: float) -> ProduceSummary:
        sender = self.sender
        return ProduceSummary(
            path=str(self.source.path),
            topic=sender.topic,
            mode=self.pacing.mode,
            target_rate=self.pacing.rate,
            speed=self.pacing.speed,
            loops=self.loops,
            copies=self.copies,
            chunk_records=self.chunker.chunk_records,
            records_read=self.records_read,
            records_sent=sender.records,
            messages=sender.messages,
            end_of_stream_markers=sender.markers,
            clears=self.clears,
            unterminated_records=self.unterminated,
            instruments=len({key[0] for key in self.books}),
            seconds=seconds,
            records_per_s=sender.records / seconds if seconds > 0 else math.inf,
            interrupted=interrupted,
            first_sent_ns=sender.first_sent_ns,
            last_sent_ns=sender.last_sent_ns,
            messages_by_instrument=dict(sender.by_instrument),
            replay_id=sender.replay_id,
            records_already_sent=self.already_sent,
        )


def _instrument_ids(source: MboFile) -> set[int]:
    """Every instrument of the file (one read of it: only when resuming)."""
    found: set[int] = set()
    for batch in source.batches():
        found.update(np.unique(batch["instrument_id"]).tolist())
    return found


def start_metrics(settings: Settings, port: int | None = None) -> int:
    """Serve /metrics on MBO_METRICS__HOST and `port` (default MBO_METRICS__PRODUCER_PORT;
    0: off). Returns the port, 0 if off."""
    host = settings.metrics.host
    chosen = settings.metrics.producer_port if port is None else port
    if chosen < 0 or chosen > 65535:
        raise InputError(f"--metrics-port must be 0 (off) or a port number, not {chosen}")
    try:
        served = serve_metrics(host, chosen)
    except OSError as exc:
        raise MboError(f"cannot serve metrics on {host}:{chosen}: {exc.strerror or exc}") from None
    if served:
        watch_kafka_reachable(settings, STAGE)
    return served


def run_produce(
    settings: Settings,
    path: Path,
    *,
    rate: float | None = None,
    speed: float | None = None,
    loops: int = 1,
    progress: ProgressCallback | None = None,
    replay_id: str | None = None,
) -> ProduceSummary:
    """`produce_file` in its own event loop, stopped cleanly by SIGINT or SIGTERM.

    The first signal stops the replay (the summary says interrupted); a second one abandons
    waiting for deliveries and raises KeyboardInterrupt.
    """

    def stopping(signum: signal.Signals) -> None:
        log.info("%s: stopping the replay", signum.name)

    return run_until_signalled(
        lambda stop: produce_file(
            settings,
            path,
            rate=rate,
            speed=speed,
            loops=loops,
            progress=progress,
            stop=stop,
            replay_id=replay_id,
        ),
        on_first_signal=stopping,
    )
