"""What the processor publishes for each records message: pure, no Kafka, fully deterministic.

A `BookPublisher` owns the books of one records-topic partition. For each records message it
applies the records and returns (a) one columnar BBO message with every best-level change of the
message's events, and (b) a depth snapshot for each book whose event opened a new snapshot
interval of event time, plus the last state of every book of an instrument at its end-of-stream
marker. The output depends only on the sequence of input messages (their content and position),
never on timing, so a publisher rebuilt by replaying the partition from its start produces
byte-identical messages (see mbo_core/schemas.py for the formats).

Records reach the engine whole events at a time, each event at its F_LAST's place in the
partition's stream (`mbo_core.book.events.EventGate`; records of an event still open at the end
of a message wait for its F_LAST in a later one), so every book of an instrument is consistent
at every F_LAST: the consolidated book there merges all of them, each at its last consistent
state, exactly as `mbo book` does, whatever the message boundaries.

Consolidated (publisher_id null) BBO rows are derived from the publishers' own published BBOs:
the consolidated best price is the best of the publishers' best prices, and its size and count
sum over the publishers quoting it there, so it can only change when a publisher's BBO does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mbo_core.book import QUALITY_FIELDS, BookEngine, BookView
from mbo_core.book import kernel as k
from mbo_core.book.events import EventGate
from mbo_core.json_columns import prices_json
from mbo_core.schemas import (
    BBO_SCHEMA,
    SNAPSHOT_SCHEMA,
    book_json,
    decode_records,
)

UNDEF = k.UNDEF_PRICE
Bbo = tuple[int, int, int, int, int, int]  # bid price, size, count, ask price, size, count
_EMPTY_BBO: Bbo = (UNDEF, 0, 0, UNDEF, 0, 0)


@dataclass(slots=True)
class Published:
    """The output of one records message."""

    instrument_id: int
    records: int
    events: int
    bbo: bytes | None = None  # the BBO message, None when no best level changed
    bbo_rows: int = 0
    snapshots: bytes | None = None  # the snapshots message, None when no snapshot was due
    snapshot_count: int = 0
    end_of_stream: bool = False


class BookPublisher:
    """The books of one records partition and what to publish about them."""

    def __init__(self, partition: int, *, snapshot_interval_ns: int, snapshot_depth: int) -> None:
        self.partition = partition
        self.snapshot_interval_ns = snapshot_interval_ns
        self.snapshot_depth = snapshot_depth
        self.engine = BookEngine()
        self.gate = EventGate()
        self.next_offset = 0
        self.symbols: dict[int, str] = {}
        self._books_of: dict[int, list[int]] = {}  # instrument -> book indexes
        self._known_books = 0
        # Per instrument: each publisher's last published BBO and quality, the consolidated BBO.
        self._publisher_bbo: dict[int, dict[int, Bbo]] = {}
        self._publisher_quality: dict[int, dict[int, list[int]]] = {}
        self._consolidated_bbo: dict[int, Bbo] = {}

    # ----------------------------------------------------------------- messages

    def process(
        self,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]] | None,
    ) -> Published:
        """Apply one records message at `offset`; ValueError if it is not a records message."""
        message = decode_records(value, headers)
        instrument_id = _instrument_of(key, message.records)
        if message.symbol:
            self.symbols[instrument_id] = message.symbol
        self.next_offset = offset + 1
        source = {"partition": self.partition, "offset": offset}
        if message.end_of_stream:
            self._end_open_events(instrument_id)
            finals = self._final_snapshots(instrument_id)
            return Published(
                instrument_id=instrument_id,
                records=0,
                events=0,
                snapshots=self._encode_snapshots(instrument_id, finals, source, message.sent_ns),
                snapshot_count=len(finals),
                end_of_stream=True,
            )
        records = message.records
        ready, origin = self.gate.feed(records)
        snapshots: list[dict[str, Any]] = []

        def snapshot_due(book: int, ready_index: int) -> None:
            # An event ends at an F_LAST of this message: its index in the message.
            snapshots.extend(self._snapshots(book, int(origin[ready_index])))

        taps = self.engine.apply_tracked(
            ready,
            snapshot_interval_ns=self.snapshot_interval_ns,
            on_snapshot_due=snapshot_due,
        )
        if len(taps) and ready is not records:
            taps[:, k.T_RECORD] = origin[taps[:, k.T_RECORD]]
        if message.unterminated_tail:
            self._end_open_events(instrument_id)
        self._index_new_books()
        bbo, rows = self._bbo_message(instrument_id, taps, source, message.sent_ns)
        return Published(
            instrument_id=instrument_id,
            records=len(records),
            events=int(np.count_nonzero(records["flags"] & k.F_LAST)),
            bbo=bbo,
            bbo_rows=rows,
            snapshots=self._encode_snapshots(instrument_id, snapshots, source, message.sent_ns),
            snapshot_count=len(snapshots),
        )

    def _end_open_events(self, instrument_id: int) -> None:
        """The instrument's events still open never close (its stream or copy ended): their
        records are counted as unterminated_event_records, never applied."""
        self.engine.mark_unterminated(self.gate.take_open(instrument_id))

    def quality(self, instrument_id: int) -> dict[str, int]:
        """The data-quality counters of an instrument, summed over its publishers' books."""
        totals = dict.fromkeys(QUALITY_FIELDS, 0)
        for b in self._books_of.get(instrument_id, []):
            for name, n in self.engine.quality(b).items():
                totals[name] += n
        return totals

    @property
    def instruments(self) -> list[int]:
        return list(self._books_of)

    # --------------------------------------------------------------------- BBO

    def _bbo_message(
        self, instrument_id: int, taps: np.ndarray, source: dict[str, int], sent_ns: int
    ) -> tuple[bytes | None, int]:
        if len(taps) == 0:
            return None, 0
        books = taps[:, k.T_BOOK]
        first = int(books[0])
        if (books == first).all():
            key = self.engine.book_key(first)
            known = self._publisher_bbo.get(key.instrument_id)
            if known is None or set(known) == {key.publisher_id}:
                return self._encode_single(instrument_id, taps, key.instrument_id,
                                           key.publisher_id, source, sent_ns)  # fmt: skip
        instruments, publishers = self.engine.book_ids(books)
        rows: list[tuple[Any, ...]] = []
        for tap, publisher, instrument in zip(taps.tolist(), publishers, instruments, strict=True):
            bbo: Bbo = tuple(tap[k.T_BBO : k.T_BBO + 6])
            quality = tap[k.T_QUALITY : k.T_QUALITY + k.N_QUALITY]
            rows.append((publisher, tap[k.T_RECORD], *tap[k.T_TS_EVENT : k.T_SEQUENCE + 1], bbo,
                         quality))  # fmt: skip
            consolidated = self._consolidate(instrument, publisher, bbo, quality)
            if consolidated is not None:
                rows.append((None, tap[k.T_RECORD], tap[k.T_TS_EVENT], tap[k.T_TS_RECV], None,
                             *consolidated))  # fmt: skip
        return self._encode_bbo(instrument_id, rows, source, sent_ns), len(rows)

    def _encode_single(
        self,
        instrument_id: int,
        taps: np.ndarray,
        instrument: int,
        publisher: int,
        source: dict[str, int],
        sent_ns: int,
    ) -> tuple[bytes, int]:
        """The BBO message of one book's changes, column by column (no per-row tuples)."""
        cols = np.ascontiguousarray(taps.T)
        last = cols[:, -1].tolist()
        self._publisher_bbo.setdefault(instrument, {})[publisher] = tuple(
            last[k.T_BBO : k.T_BBO + 6]
        )
        self._publisher_quality.setdefault(instrument, {})[publisher] = last[
            k.T_QUALITY : k.T_QUALITY + k.N_QUALITY
        ]
        columns = {
            "publisher_id": np.full(len(taps), publisher, dtype=np.int64),
            "record_index": cols[k.T_RECORD],
            "ts_event": cols[k.T_TS_EVENT],
            "ts_recv": cols[k.T_TS_RECV],
            "sequence": cols[k.T_SEQUENCE],
        }
        bbo = cols[k.T_BBO : k.T_BBO + 6]
        quality = cols[k.T_QUALITY : k.T_QUALITY + k.N_QUALITY]
        return self._bbo_json(instrument_id, source, sent_ns, columns, bbo, quality)

    def _consolidate(
        self, instrument: int, publisher: int, bbo: Bbo, quality: list[int]
    ) -> tuple[Bbo, list[int]] | None:
        """The instrument's new consolidated BBO if it has several publishers and it changed."""
        per_publisher = self._publisher_bbo.setdefault(instrument, {})
        per_publisher[publisher] = bbo
        self._publisher_quality.setdefault(instrument, {})[publisher] = quality
        if len(per_publisher) < 2:
            return None
        merged = _merge_bbo(per_publisher.values())
        if self._consolidated_bbo.get(instrument) == merged:
            return None
        self._consolidated_bbo[instrument] = merged
        totals = [sum(q) for q in zip(*self._publisher_quality[instrument].values(), strict=True)]
        return merged, totals

    def _encode_bbo(
        self,
        instrument_id: int,
        rows: list[tuple[Any, ...]],
        source: dict[str, int],
        sent_ns: int,
    ) -> bytes:
        publisher, record, ts_event, ts_recv, sequence, bbos, qualities = zip(*rows, strict=True)
        columns = {
            "publisher_id": publisher,
            "record_index": record,
            "ts_event": ts_event,
            "ts_recv": ts_recv,
            "sequence": sequence,
        }
        bbo = list(zip(*bbos, strict=True))
        quality = list(zip(*qualities, strict=True))
        return self._bbo_json(instrument_id, source, sent_ns, columns, bbo, quality)[0]

    def _bbo_json(
        self,
        instrument_id: int,
        source: dict[str, int],
        sent_ns: int,
        columns: dict[str, Any],
        bbo: Sequence[Sequence[int]] | np.ndarray,
        quality: Sequence[Sequence[int]] | np.ndarray,
    ) -> tuple[bytes, int]:
        """The mbo.bbo/1 message of columns: row ids, the six BBO columns (bid price, size,
        count, ask price, size, count) and one column per quality counter."""
        bid_px, bid_sz, bid_ct, ask_px, ask_sz, ask_ct = (np.asarray(c) for c in bbo)
        both = (bid_px != UNDEF) & (ask_px != UNDEF)
        message = {
            "schema": BBO_SCHEMA,
            "instrument_id": instrument_id,
            "symbol": self.symbols.get(instrument_id),
            "source": source,
            "sent_ns": sent_ns,
            **columns,
            "bid_price": prices_json(bid_px),
            "bid_size": bid_sz,
            "bid_count": bid_ct,
            "ask_price": prices_json(ask_px),
            "ask_size": ask_sz,
            "ask_count": ask_ct,
            "crossed": both & (bid_px > ask_px),
            "locked": (bid_px != UNDEF) & (bid_px == ask_px),
            "quality": dict(zip(QUALITY_FIELDS, quality, strict=True)),
        }
        # Columns are numpy arrays (serialized natively) or plain sequences: same JSON.
        return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY), len(bid_px)

    # --------------------------------------------------------------- snapshots

    def _snapshots(self, book: int, record_index: int) -> list[dict[str, Any]]:
        """The book's snapshot, and the consolidated one where its instrument has several."""
        self._index_new_books()
        view = self.engine.view(book, self.snapshot_depth)
        out = [self._snapshot(view, record_index, final=False)]
        siblings = self._books_of[view.instrument_id]
        if len(siblings) > 1:
            # Every sibling is consistent here (whole events only): all of them count.
            merged = self.engine.consolidated(siblings, self.snapshot_depth)
            out.append(self._snapshot(merged, record_index, final=False))
        return out

    def _final_snapshots(self, instrument_id: int) -> list[dict[str, Any]]:
        self._index_new_books()
        books = self._books_of.get(instrument_id, [])
        depth = self.snapshot_depth
        out = [self._snapshot(self.engine.view(b, depth), 0, final=True)
               for b in books]  # fmt: skip
        if len(books) > 1:
            merged = self.engine.consolidated(books, depth)
            out.append(self._snapshot(merged, 0, final=True))
        return out

    def _snapshot(self, view: BookView, record_index: int, *, final: bool) -> dict[str, Any]:
        book = book_json(view, None, encoded_levels=True)
        book["symbol"] = self.symbols.get(book["instrument_id"])
        book["record_index"] = record_index
        book["final"] = final
        return book

    def _encode_snapshots(
        self,
        instrument_id: int,
        snapshots: list[dict[str, Any]],
        source: dict[str, int],
        sent_ns: int,
    ) -> bytes | None:
        if not snapshots:
            return None
        return orjson.dumps(
            {
                "schema": SNAPSHOT_SCHEMA,
                "instrument_id": instrument_id,
                "symbol": self.symbols.get(instrument_id),
                "source": source,
                "sent_ns": sent_ns,
                "depth": self.snapshot_depth,
                "snapshots": snapshots,
            }
        )

    def _index_new_books(self) -> None:
        keys = self.engine.book_keys() if self.engine.book_count != self._known_books else []
        for b in range(self._known_books, len(keys)):
            self._books_of.setdefault(keys[b].instrument_id, []).append(b)
        self._known_books = max(self._known_books, len(keys))


def _instrument_of(key: bytes | None, records: np.ndarray) -> int:
    if key:
        return int(key)
    if len(records):
        return int(records["instrument_id"][0])
    raise ValueError("records message without key or records: instrument unknown")


def _merge_bbo(bbos: Iterable[Bbo]) -> Bbo:
    """The consolidated best levels of several publishers' best levels."""
    bbos = list(bbos)
    bids = [b for b in bbos if b[0] != UNDEF]
    asks = [b for b in bbos if b[3] != UNDEF]
    bid = max((b[0] for b in bids), default=UNDEF)
    ask = min((b[3] for b in asks), default=UNDEF)
    return (
        bid,
        sum(b[1] for b in bids if b[0] == bid),
        sum(b[2] for b in bids if b[0] == bid),
        ask,
        sum(b[4] for b in asks if b[3] == ask),
        sum(b[5] for b in asks if b[3] == ask),
    )
