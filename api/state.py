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

Live-feed clients wait on a per-instrument change event; payloads (live messages and the REST
latest book/BBO bodies alike) are encoded once per (version, publisher, depth, kind) and shared by
every client, so 1000 clients or 10,000 GETs of an unchanged book cost one encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from mbo_core.errors import MboError
from mbo_core.metrics import MESSAGES_IN
from mbo_core.schemas import BBO_SCHEMA, SNAPSHOT_SCHEMA, BookJson
from mbo_core.settings import Settings

log = logging.getLogger("api.state")

Key = tuple[int, int | None]  # (instrument_id, publisher_id or None for consolidated)
Position = tuple[int, int, int]  # (source partition, source offset, record_index)
#: The `stage` label of the live consumer's metrics.
STAGE = "api"
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
#: A live fetch returns once this much has gathered, or after MBO_KAFKA__LIVE_FETCH_MAX_WAIT_MS.
LIVE_FETCH_MIN_BYTES = 1 << 20
#: Longest the live consumer applies messages before letting the event loop serve requests.
APPLY_SLICE_S = 0.001
#: Encoded payloads kept per instrument (distinct publisher/depth/kind combinations asked for).
PAYLOAD_CACHE_SIZE = 64


@dataclass
class _Entry:
    book: BookJson | None = None
    book_position: Position | None = None
    bbo: dict[str, Any] | None = None
    bbo_position: Position | None = None
    quality: dict[str, int] = field(default_factory=dict)
    version: int = 0


@dataclass
class _Instrument:
    symbol: str | None = None
    publishers: set[int] = field(default_factory=set)
    last_update_ns: int = 0
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
        self.rejected = 0
        #: Set once the consumer has read up to the ends it saw at its start (tests wait on it).
        self.caught_up = asyncio.Event()

    # ------------------------------------------------------------------ reading

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
        return {
            "instrument_id": instrument_id,
            "symbol": info.symbol,
            "publishers": sorted(info.publishers),
            "last_update_ns": info.last_update_ns,
            "crossed": crossed,
            "locked": locked,
            "quality": quality,
        }

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
            entry = self._entries[key] = _Entry()
            if key[1] is not None:
                info.publishers.add(key[1])
        return entry

    def apply(self, value: bytes) -> None:
        """Fold one bbo or snapshots message in; ValueError if it is neither."""
        message = orjson.loads(value)
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        schema = message.get("schema")
        if schema == SNAPSHOT_SCHEMA:
            touched = self._apply_snapshots(message)
        elif schema == BBO_SCHEMA:
            touched = self._apply_bbo(message)
        else:
            raise ValueError(f"unknown schema {schema!r}")
        self.messages += 1
        if touched:
            info = self._instruments[int(message["instrument_id"])]
            info.payloads.clear()
            # Wake every waiting client at once, then give later waiters a fresh event.
            info.changed.set()
            info.changed = asyncio.Event()

    def _apply_snapshots(self, message: dict[str, Any]) -> bool:
        instrument_id = int(message["instrument_id"])
        info = self._instrument(instrument_id, message.get("symbol"))
        source = message["source"]
        touched = False
        for snapshot in message["snapshots"]:
            key: Key = (instrument_id, snapshot["publisher_id"])
            entry = self._entry(info, key)
            position = (int(source["partition"]), int(source["offset"]), snapshot["record_index"])
            if not _newer(position, entry.book_position):
                continue
            book = {k: v for k, v in snapshot.items() if k not in ("record_index", "final")}
            entry.book, entry.book_position = book, position
            entry.quality = dict(book.get("quality") or {})
            entry.version += 1
            info.last_update_ns = max(info.last_update_ns, int(book["ts_event"]))
            touched = True
        return touched

    def _apply_bbo(self, message: dict[str, Any]) -> bool:
        instrument_id = int(message["instrument_id"])
        symbol = message.get("symbol")
        info = self._instrument(instrument_id, symbol)
        source = message["source"]
        publishers = message["publisher_id"]
        # Columnar: only the last change of each publisher in the message matters here.
        last: dict[int | None, int] = {}
        for i, publisher in enumerate(publishers):
            last[publisher] = i
        quality = message.get("quality") or {}
        touched = False
        for publisher, i in last.items():
            key: Key = (instrument_id, publisher)
            entry = self._entry(info, key)
            position = (int(source["partition"]), int(source["offset"]), message["record_index"][i])
            if not _newer(position, entry.bbo_position):
                continue
            entry.bbo = _bbo_row(message, i, instrument_id, symbol)
            entry.bbo_position = position
            entry.quality = {name: int(values[i]) for name, values in quality.items()}
            entry.version += 1
            info.last_update_ns = max(info.last_update_ns, int(message["ts_event"][i]))
            touched = True
        return touched


def _side(price: str | None, size: int, count: int) -> dict[str, Any] | None:
    return None if price is None else {"price": price, "size": size, "count": count}


def _bbo_row(
    message: dict[str, Any], i: int, instrument_id: int, symbol: str | None
) -> dict[str, Any]:
    return {
        "instrument_id": instrument_id,
        "publisher_id": message["publisher_id"][i],
        "symbol": symbol,
        "ts_event": message["ts_event"][i],
        "ts_recv": message["ts_recv"][i],
        "bid": _side(message["bid_price"][i], message["bid_size"][i], message["bid_count"][i]),
        "ask": _side(message["ask_price"][i], message["ask_size"][i], message["ask_count"][i]),
        "crossed": message["crossed"][i],
        "locked": message["locked"][i],
    }


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
    """Fetches that gather up to MBO_KAFKA__LIVE_FETCH_MAX_WAIT_MS of data, not one round trip
    per message (the feeds send at most MBO_API__WS_MAX_HZ updates a second anyway)."""
    return {
        "fetch_min_bytes": LIVE_FETCH_MIN_BYTES,
        "fetch_max_wait_ms": settings.kafka.live_fetch_max_wait_ms,
    }


async def _consume(settings: Settings, state: LiveState, stop: asyncio.Event) -> None:
    # Imported here: `import api.state` stays cheap for code that only reads the state.
    from mbo_core.kafka import make_consumer, topic_partitions  # noqa: PLC0415
    from mbo_core.topics import ensure_topics  # noqa: PLC0415

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
        while not stop.is_set():
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


async def _apply_all(state: LiveState, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
    slice_end = time.perf_counter() + APPLY_SLICE_S
    for record in records:
        if record.value:
            try:
                state.apply(record.value)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                state.rejected += 1
                log.warning(
                    "skipping malformed message %s[%d]@%d: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                )
        if time.perf_counter() > slice_end:
            # A fetch holds up to 2000 messages and a BBO message of a busy book is a big JSON
            # document: applying a whole fetch at once held the event loop, and every request
            # waiting on it, for up to ~8 ms per fetch during a 5,000 records/s replay, and far
            # longer while catching up.
            await asyncio.sleep(0)
            slice_end = time.perf_counter() + APPLY_SLICE_S
