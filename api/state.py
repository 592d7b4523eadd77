"""The API's in-memory view of the live topics: per book, the newest snapshot and the newest BBO.

A background task (`consume_live`) reads `mbo.bbo` and `mbo.snapshots` without a consumer
group, every partition from its beginning (a restarted API must rebuild its state anyway), and
folds each message into `LiveState`; it reports caught up once it has read the ends it saw at
start.

Books are keyed by (instrument_id, publisher_id), publisher_id None being the consolidated book
of an instrument with several publishers. The latest book and the latest BBO are kept apart on
purpose: snapshots are conflated per event-time interval (1 s by default), BBO changes are not,
so the BBO is usually fresher than the book's top level; patching one into the other would show
a book that never existed.

A redelivered message (a restarted processor re-publishes from its last commit) repeats older
states later in the topic: every entry remembers its source position (records partition,
offset, record index) and an older position never replaces a newer one.

Messages are decoded with mbo_core.wire (numpy views of DBN MBP records, no Python per row);
an entry keeps a reference to the newest row of its book and turns it into JSON only when a
client asks, once per version.

Live-feed clients wait on a per-instrument change event; payloads (live messages and the REST
latest book/BBO bodies alike) are encoded once per (version, publisher, depth, kind) and shared by
every client, so 1000 clients or 10,000 GETs of an unchanged book cost one encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from mbo_core.errors import MboError
from mbo_core.metrics import MESSAGES_IN, MESSAGES_REJECTED
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.schemas import BookJson
from mbo_core.settings import Settings
from mbo_core.timestamps import with_iso
from mbo_core.wire import (
    BBO_SCHEMA,
    SNAPSHOTS_SCHEMA,
    EventMessage,
    MalformedMessage,
    bbo_json,
    book_json,
    decode_bbo,
    decode_snapshots,
)
from mbo_core.wire.headers import (
    H_SCHEMA,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    Headers,
    header_map,
)

log = logging.getLogger("api.state")

Key = tuple[int, int | None]  # (instrument_id, publisher_id or None for consolidated)
Position = tuple[int, int, int]  # (source partition, source offset, record_index)
#: The `stage` label of the live consumer's metrics.
STAGE = "api"
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
#: Longest the live consumer applies messages before letting the event loop serve requests.
APPLY_SLICE_S = 0.001
#: Encoded payloads kept per instrument (distinct publisher/depth/kind combinations asked for).
PAYLOAD_CACHE_SIZE = 64
#: The ns timestamps of a book and a BBO, each shown with its ISO-8601 sibling (`ts_event_iso`).
TIMES = ("ts_event", "ts_recv")


Row = tuple[EventMessage, int]  # a decoded message and a row index in it


@dataclass
class _Entry:
    book_row: Row | None = None
    book_position: Position | None = None
    bbo_row: Row | None = None
    bbo_position: Position | None = None
    quality_row: Row | None = None  # the newer of the two: its counters are the book's latest
    version: int = 0
    # JSON of the rows above (with the ISO siblings of their times), made on first use after
    # each change.
    _book: BookJson | None = None
    _bbo: dict[str, Any] | None = None

    @property
    def book(self) -> BookJson | None:
        if self._book is None and self.book_row is not None:
            self._book = with_iso(book_json(*self.book_row), *TIMES)
        return self._book

    @property
    def bbo(self) -> dict[str, Any] | None:
        if self._bbo is None and self.bbo_row is not None:
            self._bbo = with_iso(bbo_json(*self.bbo_row), *TIMES)
        return self._bbo

    @property
    def quality(self) -> dict[str, int]:
        if self.quality_row is None:
            return {}
        message, i = self.quality_row
        return dict(zip(QUALITY_FIELDS, message.ext["quality"][i].tolist(), strict=True))

    def set_book(self, row: Row, position: Position) -> None:
        self.book_row, self.book_position, self._book = row, position, None
        self.quality_row = row
        self.version += 1

    def set_bbo(self, row: Row, position: Position) -> None:
        self.bbo_row, self.bbo_position, self._bbo = row, position, None
        self.quality_row = row
        self.version += 1


@dataclass
class _Instrument:
    symbol: str | None = None
    publishers: set[int] = field(default_factory=set)
    consolidated: bool = False  # it has a consolidated book
    last_update_ns: int = 0
    #: The run shown (replay id, copy) and the newest source position applied of it.
    run: tuple[str, int] | None = None
    newest: Position | None = None
    #: Versions of the instrument's books go on from here after a new run dropped them, so a
    #: client waiting for "a version other than mine" never sees an old number again.
    next_version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    payloads: dict[tuple[Any, ...], bytes] = field(default_factory=dict)


def _newer(position: Position, than: Position | None) -> bool:
    # Positions of one instrument are ordered within its records partition; a different
    # partition means the records topic was recreated: take the newcomer.
    return than is None or position[0] != than[0] or position[1:] >= than[1:]


class LiveState:
    """Latest book and BBO per (instrument, publisher); safe to use from one event loop."""

    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}
        self._instruments: dict[int, _Instrument] = {}
        self.messages = 0
        #: Messages skipped unread: a newer message of the same single-book instrument came in
        #: the same fetch (see superseded()).
        self.superseded = 0
        self.rejected = 0
        #: Set once the consumer has read up to the ends it saw at its start (tests wait on it).
        self.caught_up = asyncio.Event()

    # ------------------------------------------------------------------ reading

    def single_book(self, instrument_id: int) -> bool:
        """Whether the instrument has one book only (one publisher, no consolidated book)."""
        info = self._instruments.get(instrument_id)
        return info is not None and len(info.publishers) == 1 and not info.consolidated

    def instrument_ids(self) -> list[int]:
        return sorted(self._instruments)

    def has_instrument(self, instrument_id: int) -> bool:
        return instrument_id in self._instruments

    def default_publisher(self, instrument_id: int) -> int | None:
        """The book an instrument is shown by: consolidated if it has several publishers."""
        publishers = self._instruments[instrument_id].publishers
        if len(publishers) == 1:
            return next(iter(publishers))
        return None

    def resolve(self, instrument_id: int, publisher_id: int | None) -> Key | None:
        """The key asked for (publisher None: the default one), None if unknown."""
        if instrument_id not in self._instruments:
            return None
        if publisher_id is None:
            return (instrument_id, self.default_publisher(instrument_id))
        key = (instrument_id, publisher_id)
        return key if key in self._entries else None

    def book(self, key: Key, depth: int) -> BookJson | None:
        entry = self._entries.get(key)
        if entry is None or entry.book is None:
            return None
        book = entry.book
        if len(book["bids"]) <= depth and len(book["asks"]) <= depth:
            return book
        return {**book, "bids": book["bids"][:depth], "asks": book["asks"][:depth]}

    def bbo(self, key: Key) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.bbo

    def version(self, key: Key) -> int:
        entry = self._entries.get(key)
        return 0 if entry is None else entry.version

    def changed_event(self, instrument_id: int) -> asyncio.Event:
        return self._instruments[instrument_id].changed

    def summary(self, instrument_id: int) -> dict[str, Any]:
        """One row of GET /v1/instruments."""
        info = self._instruments[instrument_id]
        entry = self._entries.get((instrument_id, self.default_publisher(instrument_id)))
        crossed = locked = False
        quality: dict[str, int] = {}
        if entry is not None:
            # The BBO is fresher than the conflated snapshot; fall back to the book.
            source = entry.bbo or entry.book
            if source is not None:
                crossed, locked = bool(source["crossed"]), bool(source["locked"])
            quality = dict(entry.quality)
        summary = {
            "instrument_id": instrument_id,
            "symbol": info.symbol,
            "publishers": sorted(info.publishers),
            "last_update_ns": info.last_update_ns,
            "crossed": crossed,
            "locked": locked,
            "quality": quality,
        }
        return with_iso(summary, "last_update_ns")

    def payload(self, key: Key, depth: int, kind: str) -> tuple[int, bytes]:
        """(version, encoded live message of type `kind`) for a client of `key` at `depth`."""
        return self._encoded(
            key,
            (depth, kind),
            lambda: {"type": kind, "book": self.book(key, depth), "bbo": self.bbo(key)},
        )

    def book_json(self, key: Key, depth: int) -> bytes | None:
        """The latest book at `depth` as JSON bytes (GET .../book), None before the first one."""
        entry = self._entries.get(key)
        if entry is None or entry.book is None:
            return None
        return self._encoded(key, (depth, "book"), lambda: self.book(key, depth))[1]

    def bbo_json(self, key: Key) -> bytes | None:
        """The latest BBO as JSON bytes (GET .../bbo), None before the first one."""
        entry = self._entries.get(key)
        if entry is None or entry.bbo is None:
            return None
        return self._encoded(key, (0, "bbo"), lambda: entry.bbo)[1]

    def _encoded(
        self, key: Key, view: tuple[int, str], build: Callable[[], Any]
    ) -> tuple[int, bytes]:
        # One cache for the live feeds and the REST reads: an encoding is made once per
        # (book, depth, kind, version) and shared by every client until the book changes
        # (apply() clears an instrument's cache on every change; the version in the cache key
        # keeps a stale encoding from ever being served even without that).
        instrument = self._instruments[key[0]]
        version = self.version(key)
        cache_key = (key[1], *view, version)
        encoded = instrument.payloads.get(cache_key)
        if encoded is None:
            if len(instrument.payloads) >= PAYLOAD_CACHE_SIZE:
                instrument.payloads.clear()
            encoded = instrument.payloads[cache_key] = orjson.dumps(build())
        return version, encoded

    # ------------------------------------------------------------------ writing

    def _instrument(self, instrument_id: int, symbol: str | None) -> _Instrument:
        info = self._instruments.get(instrument_id)
        if info is None:
            info = self._instruments[instrument_id] = _Instrument()
        if symbol:
            info.symbol = symbol
        return info

    def _entry(self, info: _Instrument, key: Key) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(version=info.next_version)
            if key[1] is not None:
                info.publishers.add(key[1])
            else:
                info.consolidated = True
        return entry

    def apply(self, value: bytes | None, headers: Headers | None, key: bytes | None = None) -> None:
        """Fold one bbo or snapshots message in (keyed by `key`, when given); MalformedMessage
        if it is neither, changing nothing."""
        schema = header_map(headers).get(H_SCHEMA)
        if schema == SNAPSHOTS_SCHEMA.encode():
            message, snapshot = decode_snapshots(value, headers, key), True
        elif schema == BBO_SCHEMA.encode():
            message, snapshot = decode_bbo(value, headers, key), False
        else:
            raise MalformedMessage("schema", f"unknown {H_SCHEMA} {schema!r}")
        touched = self._apply_rows(message, snapshot=snapshot)
        self.messages += 1
        if touched:
            info = self._instruments[message.context.instrument_id]
            info.payloads.clear()
            # Wake every waiting client at once, then give later waiters a fresh event.
            info.changed.set()
            info.changed = asyncio.Event()

    def _start_run(self, instrument_id: int, info: _Instrument, run: tuple[str, int]) -> None:
        """A new run of the instrument (another replay, the next loop copy): its books start
        empty in the processor, so the last run's books go, publishers and all; a client sees
        the new run's first book, never a mix."""
        for key in [k for k in self._entries if k[0] == instrument_id]:
            info.next_version = max(info.next_version, self._entries.pop(key).version + 1)
        info.publishers.clear()
        info.consolidated = False
        info.last_update_ns = 0
        info.run = run

    def _apply_rows(self, message: EventMessage, *, snapshot: bool) -> bool:
        """Take each book's last row of the message where it is newer than what is held."""
        context = message.context
        info = self._instrument(context.instrument_id, context.symbol)
        n = len(message)
        if n == 0:
            return False
        first = (context.source_partition, context.source_offset, 0)
        run = (context.replay_id, context.replay_copy)
        if run != info.run:
            if info.run is not None and not _newer(first, info.newest):
                return False  # a late copy of an earlier run's message: that run is over
            self._start_run(context.instrument_id, info, run)
        info.newest = first if info.newest is None or _newer(first, info.newest) else info.newest
        records = message.records
        books = np.where(message.consolidated, -1, records["publisher_id"].astype(np.int64))
        # Only the last row of each book in the message matters here.
        unique, from_end = np.unique(books[::-1], return_index=True)
        touched = False
        for book, i in zip(unique.tolist(), (n - 1 - from_end).tolist(), strict=True):
            key: Key = (context.instrument_id, None if book == -1 else book)
            entry = self._entry(info, key)
            position = (context.source_partition, context.source_offset,
                        int(message.ext["record_index"][i]))  # fmt: skip
            held = entry.book_position if snapshot else entry.bbo_position
            if not _newer(position, held):
                continue
            if snapshot:
                entry.set_book((message, i), position)
            else:
                entry.set_bbo((message, i), position)
            info.last_update_ns = max(info.last_update_ns, int(records["ts_event"][i]))
            touched = True
        return touched


async def consume_live(settings: Settings, state: LiveState, stop: asyncio.Event) -> None:
    """Keep `state` up to date from the bbo and snapshots topics until `stop` is set; Kafka
    failures are retried with a doubling backoff (readiness reports Kafka meanwhile)."""
    backoff = RETRY_FIRST_S
    while not stop.is_set():
        try:
            await _consume(settings, state, stop)
            return
        except (KafkaError, MboError, OSError) as exc:
            log.warning("live consumer: %s; retrying in %.1f s", exc, backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        backoff = min(backoff * 2, RETRY_MAX_S)


def live_consumer_overrides(settings: Settings) -> dict[str, int]:
    """Fetches answered at the first byte, held at the broker while there is none.

    The consumer itself reads at most once per MBO_KAFKA__LIVE_FETCH_MAX_WAIT_MS (`_consume`):
    aiokafka fetches a partition again only once its last fetch was read, so under load a fetch
    carries that long's data, not one message. Before, the broker gathered 1 MiB or 20 ms per
    fetch, and an idle pipeline paid a fetch every 20 ms (the broker 0.035 cores, the API 0.026
    of its 0.048)."""
    return {"fetch_min_bytes": 1, "fetch_max_wait_ms": settings.kafka.fetch_max_wait_ms}


async def _consume(settings: Settings, state: LiveState, stop: asyncio.Event) -> None:
    # Imported here: `import api.state` stays cheap for code that only reads the state.
    from mbo_core.kafka.clients import make_consumer, topic_partitions  # noqa: PLC0415
    from mbo_core.kafka.topics import ensure_topics  # noqa: PLC0415

    await ensure_topics(settings)
    tps = await topic_partitions(settings, settings.topics.bbo.name, settings.topics.snapshots.name)
    consumer = make_consumer(
        settings, "api-live", group_id=None, **live_consumer_overrides(settings)
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = time.monotonic()
        # The ends at start are what the state catches up to before it reports ready.
        targets: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        interval_s = settings.kafka.live_fetch_max_wait_ms / 1000
        read_at = -interval_s
        while not stop.is_set():
            # Caught up, at most one read per interval (see live_consumer_overrides).
            pause = read_at + interval_s - time.monotonic()
            if pause > 0 and state.caught_up.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                continue
            read_at = time.monotonic()
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, records in batches.items():
                MESSAGES_IN.labels(stage=STAGE, topic=tp.topic).inc(len(records))
                await _apply_all(state, records)
            if not state.caught_up.is_set():
                positions = [await consumer.position(tp) for tp in targets]
                if all(p >= e for p, e in zip(positions, targets.values(), strict=True)):
                    state.caught_up.set()
                    log.info(
                        "live state caught up: %d messages in %.1f s",
                        state.messages,
                        time.monotonic() - started,
                    )
    finally:
        await consumer.stop()


def superseded(state: LiveState, records: list[ConsumerRecord[bytes, bytes]]) -> list[bool]:
    """Which of one partition's fetched messages need not be read: a message of an instrument
    with a single book is superseded by a later one of the same fetch from a newer source
    position (its rows are all of that book, and older). Only the source-position headers are
    looked at.

    Why: every message used to be decoded and folded in, and the live view cost the API ~0.5
    CPU-us per record flat out (and the broker ~0.2 for the fetches) to keep only the last row.
    Instruments with several publishers keep every message (a publisher's last change may be
    in an older one).
    """
    positions = [_single_book_position(state, record) for record in records]
    newest: dict[tuple[bytes, int], int] = {}  # (key, source partition) -> newest offset
    for position in positions:
        if position is not None:
            where, offset = position
            newest[where] = max(offset, newest.get(where, offset))
    return [p is not None and p[1] < newest[p[0]] for p in positions]


def _single_book_position(
    state: LiveState, record: ConsumerRecord[bytes, bytes]
) -> tuple[tuple[bytes, int], int] | None:
    """((key, source partition), source offset) of a message of a single-book instrument; None
    for any other message (or one whose headers do not say: decoding reports that)."""
    key = record.key
    if key is None or not key.isdigit() or not state.single_book(int(key)):
        return None
    headers = header_map(record.headers)
    try:
        return (key, int(headers[H_SOURCE_PARTITION])), int(headers[H_SOURCE_OFFSET])
    except (KeyError, ValueError):
        return None


async def _apply_all(state: LiveState, records: list[ConsumerRecord[bytes, bytes]]) -> None:
    slice_end = time.perf_counter() + APPLY_SLICE_S
    for record, skip in zip(records, superseded(state, records), strict=True):
        if skip:
            state.superseded += 1
            continue
        if record.value is not None:
            try:
                state.apply(record.value, record.headers, record.key)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                # Skipped, not dead-lettered: the sink, which reads these topics in a group and
                # commits, copies them there once; this view re-reads them at every start.
                reason = exc.reason if isinstance(exc, MalformedMessage) else "other"
                state.rejected += 1
                MESSAGES_REJECTED.labels(STAGE, record.topic, reason).inc()
                log.warning(
                    "skipping malformed message %s[%d]@%d: %s: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    reason,
                    exc,
                )
        if time.perf_counter() > slice_end:
            # A fetch holds up to 2000 messages: applying a whole fetch at once (when messages
            # were JSON) held the event loop, and every request waiting on it, for up to ~8 ms
            # during a 5,000 records/s replay, and far longer while catching up.
            await asyncio.sleep(0)
            slice_end = time.perf_counter() + APPLY_SLICE_S
