"""What the processor publishes for each records message: pure, no Kafka, fully deterministic.

A `BookPublisher` owns the books of one records-topic partition. For each records message it
applies the records and returns (a) one columnar BBO message with every best-level change of the
message's events, and (b) a depth snapshot for each book whose event opened a new snapshot
interval of event time, plus the last state of every book of an instrument at its end-of-stream
marker. The output depends only on the sequence of input messages (their content and position),
never on timing, so a publisher rebuilt from the partition's start (a book rebuild) produces
byte-identical messages (mbo_core/wire/ has the formats: DBN MBP-1 and MBP-10 records).

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

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mbo_core.book import F_LAST, QUALITY_FIELDS, UNDEF_PRICE, BookEngine, BookView
from mbo_core.book.events import EventGate
from mbo_core.book.rows import SnapshotColumns as S
from mbo_core.book.rows import TapColumns as T
from mbo_core.records import take_records
from mbo_core.wire import (
    Encoded,
    EventContext,
    MalformedMessage,
    decode_records,
    encode_bbo,
    encode_snapshots,
    key_instrument,
)
from mbo_core.wire.layouts import EXT_CONSOLIDATED, EXT_FINAL

Bbo = tuple[int, int, int, int, int, int]  # bid price, size, count, ask price, size, count


@dataclass(slots=True)
class Published:
    """The output of one records message."""

    instrument_id: int
    records: int
    events: int
    bbo: Encoded | None = None  # the BBO message, None when no best level changed
    bbo_rows: int = 0
    snapshots: Encoded | None = None  # the snapshots message, None when no snapshot was due
    snapshot_count: int = 0
    end_of_stream: bool = False
    #: Why the message was refused (nothing applied, nothing published), None if it was not.
    rejected: MalformedMessage | None = None


class _Snapshots:
    """The snapshots of one records message: the kernel's rows (books alone on their
    instrument) and the rows written here (books with other publishers, with the consolidated
    book; final states), int64 rows of the engine's snapshot layout (SnapshotColumns), merged
    in event order."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.rows = np.zeros((4, S.width(depth)), dtype=np.int64)
        self.count = 0
        self.kernel_rows = self.rows[:0]

    @property
    def total(self) -> int:
        return self.count + len(self.kernel_rows)

    def next_row(self, record_index: int, *, flags: int) -> np.ndarray:
        if self.count == len(self.rows):
            self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
        row: np.ndarray = self.rows[self.count]
        self.count += 1
        row[S.RECORD] = record_index
        row[S.FLAGS] = flags
        return row

    def add_view(self, view: BookView, record_index: int, *, final: bool) -> None:
        """A book computed outside the kernel (the consolidated one), written into a row."""
        consolidated = EXT_CONSOLIDATED if view.publisher_id is None else 0
        row = self.next_row(record_index, flags=consolidated | (EXT_FINAL if final else 0))
        row[S.PUBLISHER] = view.publisher_id or 0
        row[S.TS_EVENT] = view.ts_event
        row[S.TS_RECV] = view.ts_recv
        row[S.SEQUENCE] = view.sequence or 0
        row[S.QUALITY] = [view.quality[name] for name in QUALITY_FIELDS]
        depth = self.depth
        for side, levels in enumerate((view.bids, view.asks)):
            block = row[S.LEVELS + side * 3 * depth : S.LEVELS + (side + 1) * 3 * depth]
            block[:] = np.tile([UNDEF_PRICE, 0, 0], depth)
            block[: 3 * len(levels)] = levels[:depth].reshape(-1)

    def encode(self, context: EventContext) -> Encoded | None:
        if not self.total:
            return None
        if not len(self.kernel_rows):
            rows = self.rows[: self.count]
        elif not self.count:
            rows = self.kernel_rows
        else:
            both = np.concatenate([self.kernel_rows, self.rows[: self.count]])
            # Event order; one event's rows (a book and its consolidated book) keep theirs.
            rows = both[np.argsort(both[:, S.RECORD], kind="stable")]
        n, depth = len(rows), self.depth
        levels = rows[:, S.LEVELS :].reshape(n, 2, depth, 3)
        flags = rows[:, S.FLAGS]
        return encode_snapshots(
            context,
            depth=depth,
            publisher_id=rows[:, S.PUBLISHER],
            record_index=rows[:, S.RECORD],
            ts_event=rows[:, S.TS_EVENT],
            ts_recv=rows[:, S.TS_RECV],
            sequence=rows[:, S.SEQUENCE],
            bids=levels[:, 0],
            asks=levels[:, 1],
            quality=rows[:, S.QUALITY],
            consolidated=(flags & EXT_CONSOLIDATED) != 0,
            final=(flags & EXT_FINAL) != 0,
        )


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
        #: Per instrument: the run (replay id, copy) of its last records message.
        self._run_of: dict[int, tuple[str, int]] = {}

    # ----------------------------------------------------------------- messages

    def process(
        self,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]] | None,
    ) -> Published:
        """Apply one records message at `offset`. A malformed one (mbo_core.wire) changes no book
        and is returned with `rejected` set: the same decision wherever and whenever the
        message is met, so a rebuild skips exactly what the live worker dead-lettered."""
        self.next_offset = offset + 1
        try:
            message = decode_records(value, headers, key)
            if message.instrument_id is None:
                raise MalformedMessage(
                    "key", "records message without key or records: instrument unknown"
                )
        except MalformedMessage as exc:
            return Published(instrument_id=_key_or_zero(key), records=0, events=0, rejected=exc)
        instrument_id = message.instrument_id
        run = (message.replay_id, message.replay_copy)
        if self._run_of.setdefault(instrument_id, run) != run:
            self._start_run(instrument_id)
            self._run_of[instrument_id] = run
        if message.symbol:
            self.symbols[instrument_id] = message.symbol
        context = EventContext(
            instrument_id=instrument_id,
            symbol=self.symbols.get(instrument_id),
            source_partition=self.partition,
            source_offset=offset,
            sent_ns=message.sent_ns,
            replay_id=message.replay_id,
            replay_copy=message.replay_copy,
        )
        snapshots = _Snapshots(self.snapshot_depth)
        if message.end_of_stream:
            self._end_open_events(instrument_id)
            self._final_snapshots(instrument_id, snapshots)
            return Published(
                instrument_id=instrument_id,
                records=0,
                events=0,
                snapshots=snapshots.encode(context),
                snapshot_count=snapshots.total,
                end_of_stream=True,
            )
        records = message.records
        ready, origin = self.gate.feed(records)

        def snapshot_due(book: int, ready_index: int) -> None:
            # An event ends at an F_LAST of this message: its index in the message.
            self._snapshots(book, int(origin[ready_index]), snapshots)

        taps, snapshots.kernel_rows = self.engine.apply_tracked(
            ready,
            snapshot_interval_ns=self.snapshot_interval_ns,
            snapshot_depth=self.snapshot_depth,
            on_snapshot_due=snapshot_due,
        )
        if ready is not records:
            taps[:, T.RECORD] = origin[taps[:, T.RECORD]]
            kernel_rows = snapshots.kernel_rows
            kernel_rows[:, S.RECORD] = origin[kernel_rows[:, S.RECORD]]
        if message.unterminated_tail:
            self._end_open_events(instrument_id)
        self._index_new_books()
        bbo, rows = self._bbo_message(context, taps, records)
        return Published(
            instrument_id=instrument_id,
            records=len(records),
            events=int(np.count_nonzero(records["flags"] & F_LAST)),
            bbo=bbo,
            bbo_rows=rows,
            snapshots=snapshots.encode(context),
            snapshot_count=snapshots.total,
        )

    def _start_run(self, instrument_id: int) -> None:
        """A new run of the instrument's data (another replay, or the next copy of a looped
        one): its books start empty, counters at zero, as if this were the first message the
        processor saw of it. The last run's events still open never close (that run stopped
        without its end-of-stream marker): dropped with its books."""
        self.gate.take_open(instrument_id)
        self._index_new_books()
        self.engine.retire_books(self._books_of.pop(instrument_id, []))
        self._publisher_bbo.pop(instrument_id, None)
        self._publisher_quality.pop(instrument_id, None)
        self._consolidated_bbo.pop(instrument_id, None)

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
        self, context: EventContext, taps: np.ndarray, records: np.ndarray
    ) -> tuple[Encoded | None, int]:
        if len(taps) == 0:
            return None, 0
        books = taps[:, T.BOOK]
        first = int(books[0])
        if (books == first).all():
            key = self.engine.book_key(first)
            known = self._publisher_bbo.get(key.instrument_id)
            if known is None or set(known) == {key.publisher_id}:
                return self._single_book_bbo(context, taps, key.instrument_id,
                                             key.publisher_id, records)  # fmt: skip
        return self._consolidating_bbo(context, taps, books, records)

    def _single_book_bbo(
        self,
        context: EventContext,
        taps: np.ndarray,
        instrument: int,
        publisher: int,
        records: np.ndarray,
    ) -> tuple[Encoded, int]:
        """The BBO message of one book's changes: whole columns of the taps, no row loop."""
        last = taps[-1].tolist()
        self._publisher_bbo.setdefault(instrument, {})[publisher] = tuple(last[T.BBO])
        self._publisher_quality.setdefault(instrument, {})[publisher] = last[T.QUALITY]
        n = len(taps)
        return self._encode_bbo(
            context,
            publisher_id=np.full(n, publisher, dtype=np.int64),
            taps=taps,
            consolidated=np.zeros(n, dtype=bool),
            records=records,
        ), n

    def _consolidating_bbo(
        self, context: EventContext, taps: np.ndarray, books: np.ndarray, records: np.ndarray
    ) -> tuple[Encoded, int]:
        """The BBO message of an instrument with several publishers: each publisher's change,
        followed by the consolidated BBO where that change moved it."""
        instruments, publishers = self.engine.book_ids(books)
        rows: list[list[int]] = []
        publisher_ids: list[int] = []
        consolidated: list[bool] = []
        for tap, publisher, instrument in zip(taps.tolist(), publishers, instruments, strict=True):
            bbo: Bbo = tuple(tap[T.BBO])
            quality = tap[T.QUALITY]
            rows.append(tap)
            publisher_ids.append(publisher)
            consolidated.append(False)
            merged = self._consolidate(instrument, publisher, bbo, quality)
            if merged is not None:
                merged_bbo, totals = merged
                row = list(tap)
                row[T.SEQUENCE] = 0
                row[T.BBO] = merged_bbo
                row[T.QUALITY] = totals
                rows.append(row)
                publisher_ids.append(0)
                consolidated.append(True)
        return self._encode_bbo(
            context,
            publisher_id=np.array(publisher_ids, dtype=np.int64),
            taps=np.array(rows, dtype=np.int64),
            consolidated=np.array(consolidated, dtype=bool),
            records=records,
        ), len(rows)

    @staticmethod
    def _encode_bbo(
        context: EventContext,
        *,
        publisher_id: np.ndarray,
        taps: np.ndarray,
        consolidated: np.ndarray,
        records: np.ndarray,
    ) -> Encoded:
        record_index = taps[:, T.RECORD]
        return encode_bbo(
            context,
            publisher_id=publisher_id,
            record_index=record_index,
            ts_event=taps[:, T.TS_EVENT],
            ts_recv=taps[:, T.TS_RECV],
            sequence=taps[:, T.SEQUENCE],
            bbo=taps[:, T.BBO],
            quality=taps[:, T.QUALITY],
            consolidated=consolidated,
            closing=take_records(records, record_index),
        )

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

    # --------------------------------------------------------------- snapshots

    def _snapshots(self, book: int, record_index: int, out: _Snapshots) -> None:
        """The snapshot of a book that shares its instrument with other publishers' books (the
        kernel writes the others' itself), then the consolidated one."""
        self._index_new_books()
        row = out.next_row(record_index, flags=0)
        self.engine.snapshot_row(book, self.snapshot_depth, row)
        siblings = self._books_of[int(self.engine.book_key(book).instrument_id)]
        if len(siblings) > 1:
            # Every sibling is consistent here (whole events only): all of them count.
            merged = self.engine.consolidated(siblings, self.snapshot_depth)
            out.add_view(merged, record_index, final=False)

    def _final_snapshots(self, instrument_id: int, out: _Snapshots) -> None:
        self._index_new_books()
        books = self._books_of.get(instrument_id, [])
        for b in books:
            self.engine.snapshot_row(b, out.depth, out.next_row(0, flags=EXT_FINAL))
        if len(books) > 1:
            out.add_view(self.engine.consolidated(books, out.depth), 0, final=True)

    def _index_new_books(self) -> None:
        keys = self.engine.book_keys() if self.engine.book_count != self._known_books else []
        for b in range(self._known_books, len(keys)):
            self._books_of.setdefault(keys[b].instrument_id, []).append(b)
        self._known_books = max(self._known_books, len(keys))


def _key_or_zero(key: bytes | None) -> int:
    try:
        return key_instrument(key) or 0
    except MalformedMessage:
        return 0


def _merge_bbo(bbos: Iterable[Bbo]) -> Bbo:
    """The consolidated best levels of several publishers' best levels."""
    bbos = list(bbos)
    bids = [b for b in bbos if b[0] != UNDEF_PRICE]
    asks = [b for b in bbos if b[3] != UNDEF_PRICE]
    bid = max((b[0] for b in bids), default=UNDEF_PRICE)
    ask = min((b[3] for b in asks), default=UNDEF_PRICE)
    return (
        bid,
        sum(b[1] for b in bids if b[0] == bid),
        sum(b[2] for b in bids if b[0] == bid),
        ask,
        sum(b[4] for b in asks if b[3] == ask),
        sum(b[5] for b in asks if b[3] == ask),
    )
