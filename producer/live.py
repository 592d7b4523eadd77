"""A Databento Live session into the records topic (`mbo produce --live`, `mbo run --live`).

The messages are those of a file replay (docs/producer.md, mbo_core/wire/records.py): raw MBO
records of one instrument per message, whole events only, keyed by instrument, cut by
producer.chunking's Chunker in time slices with the linger of a paced replay (FlushSchedule),
and sent by producer.app's Sender. So the processor, the sink, the API and the page work
unchanged. The records come from mbo_core.databento.live.LiveFeed instead of a file: what
arrived since the last time slice is taken at each one.

**Runs.** The session has one replay id, `live-<dataset>-<UTC time>-<random>` (a new one every
session), and each connection of it is a copy: `replay-copy` 1, 2, ... A gap (a connection lost
and made again) therefore starts a new run. The processor starts that run's books empty, and the
snapshot the new connection begins with rebuilds them. Before the first record of the next run
goes out, every record of the run before has been sent: its complete events, then the records of
events it never closed, as unterminated tails (the processor counts them and never applies
them). This is what happens between the copies of a looped file replay.

**Stopping** (SIGINT/SIGTERM, `stop`): the connection is closed, and everything it received is
sent (complete events, then unterminated tails). Then come the end-of-stream markers of the last
run's instruments (the processor publishes their final books), every send is acknowledged, and
the summary says interrupted. A session the gateway ended (an ErrorMsg, or no reconnection
possible) does the same, then raises its DatabentoError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka.errors import KafkaError

from mbo_core.databento.live import LiveFeed, LiveRequest, Segment
from mbo_core.errors import MboError
from mbo_core.kafka.clients import bootstrap_servers, make_producer
from mbo_core.kafka.topics import ensure_topics
from mbo_core.metrics import PRODUCER_RATE, RECORDS_IN
from mbo_core.replay_lock import replay_lock
from mbo_core.settings import Settings
from mbo_core.shutdown import run_until_signalled
from producer.app import (
    STAGE,
    ProgressCallback,
    Sender,
    chunk_bound,
    flush_schedule,
    time_slice_s,
)
from producer.chunking import Chunker
from producer.resume import new_replay_id

log = logging.getLogger("producer.live")


def live_replay_id(dataset: str) -> str:
    """A new session's id: `live-GLBX-MDP3-20261207T142716Z-3f9a1c2e` (letters, digits and
    dashes only, like every replay id)."""
    return new_replay_id("live-" + "".join(c if c.isalnum() else "-" for c in dataset))


@dataclass(frozen=True)
class LiveSummary:
    """What a live session did. records_sent counts acknowledged records (unterminated tails
    included); connections is the number of runs (replay-copy 1 .. connections)."""

    source: str  # "databento-live"
    dataset: str
    symbols: list[str]
    stype_in: str
    start: int | None  # intraday replay from (UNIX ns), or None
    snapshot: bool
    gateway: str  # host:port
    topic: str
    replay_id: str
    connections: int
    gaps: int  # connections that ended without being asked to (each followed by a new run)
    heartbeats: int
    system_messages: int
    records_received: int  # MBO records taken from the gateway
    records_sent: int
    messages: int  # records messages acknowledged (end-of-stream markers not counted)
    end_of_stream_markers: int
    unterminated_records: int  # records of events a run never closed, sent as tails
    instruments: int
    chunk_records: int
    seconds: float  # from the start of the stream to the last acknowledgement
    records_per_s: float
    interrupted: bool  # stopped by a signal (not ended by the gateway)
    first_sent_ns: int | None
    last_sent_ns: int | None
    record_path: str | None  # the --record file
    messages_by_instrument: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["messages_by_instrument"] = {
            str(key): value for key, value in sorted(self.messages_by_instrument.items())
        }
        return out

    def line(self) -> str:
        state = "stopped" if self.interrupted else "ended"
        gaps = f"{self.gaps} gap{'' if self.gaps == 1 else 's'}"
        connections = f"{self.connections} connection{'' if self.connections == 1 else 's'}"
        tails = ""
        if self.unterminated_records:
            n = self.unterminated_records
            tails = f", {n:,} record{'' if n == 1 else 's'} of unclosed events sent as tails"
        return (
            f"{state}: {self.records_received:,} records received in {connections} ({gaps}), "
            f"{self.records_sent:,} sent in {self.messages:,} messages to {self.topic} in "
            f"{self.seconds:.2f} s (replay id {self.replay_id}{tails})"
        )


async def produce_live(
    settings: Settings,
    request: LiveRequest,
    *,
    key: str | None,
    record: Path | None = None,
    progress: ProgressCallback | None = None,
    stop: asyncio.Event | None = None,
) -> LiveSummary:
    """Stream the Live session of `request` into the records topic until `stop` is set (or the
    gateway ends it); see the module doc.

    The gateway is asked first (DatabentoError for a refused key, dataset or an unreachable
    gateway), then Kafka (MboError). Holds the records topic's replay lock (ReplayBusyError)."""
    feed = LiveFeed(
        request,
        key=key,
        gateway=settings.databento.live_gateway,
        port=settings.databento.live_port,
        record=record,
    )
    with replay_lock(settings, f"Databento Live {request.describe()}"):
        try:
            await feed.open()
            return await _produce(settings, feed, progress, stop or asyncio.Event(), record)
        finally:
            await feed.close()


async def _produce(
    settings: Settings,
    feed: LiveFeed,
    progress: ProgressCallback | None,
    stop: asyncio.Event,
    record: Path | None,
) -> LiveSummary:
    await ensure_topics(settings)
    # Chunks wait for the linger here: the client's own (MBO_KAFKA__LINGER_MS) would add to it.
    producer = make_producer(settings, STAGE, linger_ms=0)
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise MboError(f"cannot reach Kafka at {bootstrap_servers(settings)}: {exc}") from None
    try:
        sender = Sender(
            producer, settings, feed.request.dataset, {}, live_replay_id(feed.request.dataset)
        )
        return await _LiveSession(settings, feed, sender, progress, stop, record).run()
    finally:
        await producer.stop()


class _LiveSession:
    def __init__(
        self,
        settings: Settings,
        feed: LiveFeed,
        sender: Sender,
        progress: ProgressCallback | None,
        stop: asyncio.Event,
        record: Path | None,
    ) -> None:
        self.feed = feed
        self.sender = sender
        self.progress = progress
        self.stop = stop
        self.record = record
        self.chunker = Chunker(chunk_bound(settings))
        self.slice_s = time_slice_s(settings)
        self.schedule = flush_schedule(settings)
        self.instruments: set[int] = set()
        self.run_instruments: set[int] = set()  # those of the current run (connection)
        self.records_received = 0
        self.unterminated = 0
        self._records_in = RECORDS_IN.labels(stage=STAGE)
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()

    def elapsed(self) -> float:
        return self._loop.time() - self._start

    async def run(self) -> LiveSummary:
        PRODUCER_RATE.set(0)
        request = self.feed.request
        log.info(
            "live session started: Databento %s -> %s, replay id %s, chunks of <= %d records",
            request.describe(),
            self.sender.topic,
            self.sender.replay_id,
            self.chunker.chunk_records,
            extra={
                "event": "live_started",
                "dataset": request.dataset,
                "symbols": list(request.symbols),
                "topic": self.sender.topic,
                "replay_id": self.sender.replay_id,
            },
        )
        self._start = self._loop.time()
        self.feed.start()
        while True:
            stopping = self.stop.is_set()
            if stopping:
                await self.feed.stop()
            over = stopping or self.feed.ended  # read before the last take: nothing comes later
            for segment in self.feed.take():
                await self._take(segment)
            leaving = self.schedule.due(self.chunker.waiting_instruments(), self.elapsed())
            if len(leaving):
                await self.sender.send(self.chunker.flush(instruments=leaving))
            self.sender.check()
            if over:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.slice_s)
        await self._end_run()
        await self.sender.end_of_stream(sorted(self.run_instruments))
        await self.sender.drain()
        summary = self._summary(interrupted=stopping)
        log.info(
            "live session %s",
            summary.line(),
            extra={"event": "live_" + ("stopped" if stopping else "ended")}
            | {k: v for k, v in summary.to_json().items() if k != "messages_by_instrument"},
        )
        if self.feed.failure is not None:
            raise self.feed.failure
        return summary

    async def _take(self, segment: Segment) -> None:
        if segment.connection != self.sender.copy:
            # The first records of a new connection: the run before is over (all of it sent).
            await self._end_run()
            self.sender.copy = segment.connection
            self.run_instruments = set()
        self.sender.symbols.update(segment.symbols)
        records = segment.records
        if len(records):
            count = len(records)
            self.records_received += count
            self._records_in.inc(count)
            if self.progress is not None:
                self.progress(count)
            seen = np.unique(records["instrument_id"]).tolist()
            self.run_instruments.update(seen)
            self.instruments.update(seen)
            await self.sender.send(self.chunker.feed(records))
        if segment.ended:
            await self._end_run()

    async def _end_run(self) -> None:
        """Everything of the current run: complete events, then the unclosed ones as tails."""
        self.unterminated += await self.sender.send_remaining(self.chunker)

    def _summary(self, *, interrupted: bool) -> LiveSummary:
        feed, sender = self.feed, self.sender
        request = feed.request
        seconds = self.elapsed()
        return LiveSummary(
            source="databento-live",
            dataset=request.dataset,
            symbols=list(request.symbols),
            stype_in=request.stype_in,
            start=request.start,
            snapshot=request.snapshot,
            gateway=feed.address,
            topic=sender.topic,
            replay_id=sender.replay_id,
            connections=feed.connections,
            gaps=feed.gaps,
            heartbeats=feed.heartbeats,
            system_messages=feed.system_messages,
            records_received=self.records_received,
            records_sent=sender.records,
            messages=sender.messages,
            end_of_stream_markers=sender.markers,
            unterminated_records=self.unterminated,
            instruments=len(self.instruments),
            chunk_records=self.chunker.chunk_records,
            seconds=seconds,
            records_per_s=sender.records / seconds if seconds > 0 else math.inf,
            interrupted=interrupted,
            first_sent_ns=sender.first_sent_ns,
            last_sent_ns=sender.last_sent_ns,
            record_path=str(self.record) if self.record is not None else None,
            messages_by_instrument=dict(sender.by_instrument),
        )


def run_live(
    settings: Settings,
    request: LiveRequest,
    *,
    key: str | None,
    record: Path | None = None,
    progress: ProgressCallback | None = None,
) -> LiveSummary:
    """`produce_live` in its own event loop, stopped cleanly by SIGINT or SIGTERM (a second
    signal abandons waiting for deliveries and raises KeyboardInterrupt)."""

    def stopping(signum: signal.Signals) -> None:
        log.info("%s: stopping the live session", signum.name)

    return run_until_signalled(
        lambda stop: produce_live(
            settings, request, key=key, record=record, progress=progress, stop=stop
        ),
        on_first_signal=stopping,
    )
