"""The order-book engine: exact books from Databento MBO records, per (instrument, publisher).

Pure: it takes decoded records (a numpy array of `MBO_DTYPE`) and answers questions about the
books; it reads and writes nothing. Rules: shared/docs/book-rules.md (Databento's MBO semantics).

A book is observable only after a record flagged F_LAST closed its event; reading a book in the
middle of an event raises `BookNotObservableError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from mbo_core.book import kernel as k
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.records import MBO_DTYPE

UNDEF_PRICE = k.UNDEF_PRICE
F_LAST = k.F_LAST
F_TOB = k.F_TOB
F_SNAPSHOT = k.F_SNAPSHOT
F_MAYBE_BAD_BOOK = k.F_MAYBE_BAD_BOOK

assert len(QUALITY_FIELDS) == k.N_QUALITY, "kernel and mbo_core.quality disagree"

_EMPTY_LEVELS = np.zeros((0, 3), dtype=np.int64)


#: The instrument id of a retired book (never a DBN instrument id, which is a u32).
RETIRED = -1


class BookNotObservableError(RuntimeError):
    """The book is in the middle of an event (its last record had no F_LAST)."""


@dataclass(frozen=True, slots=True)
class BookKey:
    instrument_id: int
    publisher_id: int


@dataclass(frozen=True, slots=True)
class BookView:
    """A consistent view of one book (or of one instrument across publishers).

    bids/asks are int64 arrays of shape (n, 3): price (1e-9 units), total size, order count;
    bids best (highest) first, asks best (lowest) first.
    """

    instrument_id: int
    publisher_id: int | None  # None: consolidated across publishers
    ts_event: int
    ts_recv: int
    sequence: int | None
    bids: np.ndarray
    asks: np.ndarray
    quality: dict[str, int]

    @property
    def best_bid(self) -> int | None:
        return int(self.bids[0, 0]) if len(self.bids) else None

    @property
    def best_ask(self) -> int | None:
        return int(self.asks[0, 0]) if len(self.asks) else None

    @property
    def crossed(self) -> bool:
        bid, ask = self.best_bid, self.best_ask
        return bid is not None and ask is not None and bid > ask

    @property
    def locked(self) -> bool:
        bid, ask = self.best_bid, self.best_ask
        return bid is not None and ask is not None and bid == ask


@dataclass(frozen=True, slots=True)
class RestingOrder:
    side: str  # "B" or "A"
    price: int
    size: int


class BookEngine:
    """Every book of one MBO stream. Not thread-safe; one engine per consumer of a stream."""

    def __init__(
        self,
        *,
        order_capacity: int = 1 << 14,
        level_capacity: int = 1 << 12,
        book_capacity: int = 8,
        ladder_width: int = 64,
    ) -> None:
        levels = np.zeros((level_capacity, k.LEVEL_COLUMNS), dtype=np.int64)
        levels[:, k.L_HEAD] = np.arange(1, level_capacity + 1)
        levels[-1, k.L_HEAD] = k.EMPTY
        meta = np.array([0, k.EMPTY, 0, 0], dtype=np.int64)
        self._state = k.KernelState(
            meta=meta,
            books=np.zeros((book_capacity, k.BOOK_COLUMNS), dtype=np.int64),
            book_table=np.full(_pow2(book_capacity * 4), k.EMPTY, dtype=np.int64),
            orders=np.zeros((order_capacity, k.ORDER_COLUMNS), dtype=np.int64),
            order_table=np.full(_pow2(order_capacity * 2), k.EMPTY, dtype=np.int64),
            levels=levels,
            lad_key=np.zeros((book_capacity * 2, ladder_width), dtype=np.int64),
            lad_lvl=np.zeros((book_capacity * 2, ladder_width), dtype=np.int64),
            lad_n=np.zeros(book_capacity * 2, dtype=np.int64),
        )
        self._out = np.zeros(5, dtype=np.int64)
        self._no_taps = np.zeros((0, k.TAP_COLUMNS), dtype=np.int64)
        self._taps = np.zeros((1024, k.TAP_COLUMNS), dtype=np.int64)
        self._no_snaps = np.zeros((0, k.S_LEVELS), dtype=np.int64)
        self._snaps = self._no_snaps
        self._scratch = np.zeros((64, 3), dtype=np.int64)
        self.records_applied = 0

    # ----------------------------------------------------------------- applying

    def apply(self, records: np.ndarray) -> None:
        """Apply every record, in order."""
        for _ in self.apply_events(records, stop_at_events=False):
            pass

    def apply_events(self, records: np.ndarray, *, stop_at_events: bool = True) -> Iterator[int]:
        """Apply records in order, yielding the book index after each record flagged F_LAST.

        While the consumer holds a yielded index, that book is observable (snapshot it then).
        """
        recs = _as_mbo(records)
        out = self._out
        i, n = 0, len(recs)
        while i < n:
            status = k.apply_batch(
                self._state, recs, i, n, stop_at_events, 0, self._no_taps, out, self._no_snaps, 0
            )
            self.records_applied += int(out[0]) - i
            i = int(out[0])
            if status == k.EVENT:
                yield int(out[1])
            elif status != k.DONE:
                self._grow(status)

    def apply_tracked(
        self,
        records: np.ndarray,
        *,
        snapshot_interval_ns: int,
        snapshot_depth: int,
        on_snapshot_due: Callable[[int, int], None],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply records in order, tracking what a publisher of the books must publish.

        Returns (taps, snapshots). taps: one row per event that changed its book's best levels
        (columns: rows.TapColumns: record index, book, ts_event, ts_recv, sequence, bid price/size/
        count, ask price/size/count, the book's quality counters; an empty side has price
        UNDEF_PRICE). "Changed" is relative to what this engine last reported, so the result
        depends only on the records applied since the engine was created.
        A snapshot is due after each event that is its book's first in a new
        snapshot_interval_ns bucket of ts_event. For a book alone on its instrument the kernel
        writes it (snapshot_row at snapshot_depth, S_RECORD the event's last record) into
        `snapshots`, in event order, without stopping; for a book that shares its instrument
        with other publishers' books it calls on_snapshot_due(book, record_index) right after
        the event, while every book is observable (the caller adds the consolidated book).
        """
        recs = _as_mbo(records)
        n = len(recs)
        if len(self._taps) < n:
            self._taps = np.zeros((n, k.TAP_COLUMNS), dtype=np.int64)
        width = k.S_LEVELS + 6 * snapshot_depth
        if self._snaps.shape[1] != width or len(self._snaps) < n:
            # At most one snapshot per event: as many rows as records always suffice.
            self._snaps = np.zeros((max(n, 64), width), dtype=np.int64)
        out = self._out
        out[2] = 0
        out[4] = 0
        i = 0
        while i < n:
            status = k.apply_batch(
                self._state, recs, i, n, False, snapshot_interval_ns, self._taps, out,
                self._snaps, snapshot_depth,
            )  # fmt: skip
            self.records_applied += int(out[0]) - i
            i = int(out[0])
            if status == k.EVENT:
                on_snapshot_due(int(out[1]), i - 1)
            elif status != k.DONE:
                self._grow(status)
        return self._taps[: int(out[2])].copy(), self._snaps[: int(out[4])].copy()

    def mark_unterminated(self, records: np.ndarray) -> None:
        """Count records of events that will never close (the stream ended); apply none."""
        recs = _as_mbo(records)
        books = np.array(
            [
                self.book_index(int(r["instrument_id"]), int(r["publisher_id"]), create=True)
                for r in recs
            ],
            dtype=np.int64,
        )
        k.count_unterminated(self._state, books)

    def _grow(self, need: int) -> None:
        s = self._state
        if need == k.NEED_BOOKS:
            old = s.books.shape[0]
            books = _grow_rows(s.books, old * 2, 0)
            self._state = s = s._replace(
                books=books,
                book_table=np.full(_pow2(old * 8), k.EMPTY, dtype=np.int64),
                lad_key=_grow_rows(s.lad_key, old * 4, 0),
                lad_lvl=_grow_rows(s.lad_lvl, old * 4, 0),
                lad_n=np.concatenate([s.lad_n, np.zeros(old * 2, dtype=np.int64)]),
            )
            k.rebuild_book_table(s)
        elif need == k.NEED_ORDERS:
            old = s.orders.shape[0]
            self._state = s = s._replace(
                orders=_grow_rows(s.orders, old * 2, 0),
                order_table=np.full(_pow2(old * 4), k.EMPTY, dtype=np.int64),
            )
            k.rebuild_order_table(s)
        elif need == k.NEED_LEVELS:
            old = s.levels.shape[0]
            levels = _grow_rows(s.levels, old * 2, 0)
            levels[old:, k.L_HEAD] = np.arange(old + 1, old * 2 + 1)
            levels[-1, k.L_HEAD] = k.EMPTY
            s.meta[k.M_LEVEL_FREE] = old
            self._state = s._replace(levels=levels)
        elif need == k.NEED_LADDER:
            rows, width = s.lad_key.shape
            lad_key = np.zeros((rows, width * 2), dtype=np.int64)
            lad_lvl = np.zeros((rows, width * 2), dtype=np.int64)
            lad_key[:, :width] = s.lad_key
            lad_lvl[:, :width] = s.lad_lvl
            self._state = s._replace(lad_key=lad_key, lad_lvl=lad_lvl)
        else:  # pragma: no cover - the kernel returns only the statuses above
            raise AssertionError(f"unknown kernel status {need}")

    def retire_books(self, books: list[int]) -> None:
        """Forget these books (all of one instrument's, to start it afresh): their orders and
        levels are released and the next record of one of their (instrument, publisher) keys
        opens a new, empty book with zeroed counters, exactly as the first record of a stream
        does. A retired book keeps its index, with instrument id RETIRED, and is never found
        again."""
        if not books:
            return
        s = self._state
        for b in books:
            k.clear_book(s, b)
            s.books[b, :] = 0
            s.books[b, k.B_INSTRUMENT] = RETIRED
        # The keys of retired books leave the open-addressing table: build it again.
        s.book_table[:] = k.EMPTY
        for b in range(self.book_count):
            if s.books[b, k.B_INSTRUMENT] != RETIRED:
                k.index_book(s, b)

    # ------------------------------------------------------------------ reading

    @property
    def book_count(self) -> int:
        return int(self._state.meta[k.M_BOOKS])

    def book_keys(self) -> list[BookKey]:
        books = self._state.books
        return [
            BookKey(int(books[b, k.B_INSTRUMENT]), int(books[b, k.B_PUBLISHER]))
            for b in range(self.book_count)
        ]

    def book_index(self, instrument_id: int, publisher_id: int, *, create: bool = False) -> int:
        """The engine's index of a book; KeyError when it has never seen that book."""
        b = int(k.find_book(self._state, instrument_id, publisher_id))
        if b != k.EMPTY:
            return b
        if not create:
            raise KeyError(BookKey(instrument_id, publisher_id))
        if self.book_count == self._state.books.shape[0]:
            self._grow(k.NEED_BOOKS)
        s = self._state
        b = self.book_count
        s.meta[k.M_BOOKS] = b + 1
        k.init_book(s, b, instrument_id, publisher_id)
        return b

    def book_key(self, book: int) -> BookKey:
        instrument_id, publisher_id = self._state.books[book, : k.B_PUBLISHER + 1].tolist()
        return BookKey(instrument_id, publisher_id)

    def book_ids(self, books: np.ndarray) -> tuple[list[int], list[int]]:
        """(instrument ids, publisher ids) of an array of book indexes."""
        rows = self._state.books[books]
        return rows[:, k.B_INSTRUMENT].tolist(), rows[:, k.B_PUBLISHER].tolist()

    def is_observable(self, book: int) -> bool:
        return bool(self._state.books[book, k.B_OPEN] == 0)

    def events(self, book: int) -> int:
        """Events (F_LAST records) this book has seen."""
        return int(self._state.books[book, k.B_EVENTS])

    def order_count(self, book: int) -> int:
        return int(self._state.books[book, k.B_ORDERS])

    def quality(self, book: int) -> dict[str, int]:
        row = self._state.books[book, k.B_QUALITY : k.B_QUALITY + k.N_QUALITY].tolist()
        return dict(zip(QUALITY_FIELDS, row, strict=True))

    def levels(self, book: int, side: str, depth: int = 10) -> np.ndarray:
        """Top `depth` levels of a side ("B" or "A") as (price, size, count) rows, best first.

        O(depth): reads the best end of the side's ladder. depth <= 0 returns every level.
        """
        self._check_observable(book)
        s = self._state
        sd = _side_index(side)
        n = int(s.lad_n[book * 2 + sd])
        m = n if depth <= 0 else min(depth, n)
        if m == 0:
            return _EMPTY_LEVELS
        out = np.empty((m, 3), dtype=np.int64)
        k.top_levels(s.levels, s.lad_lvl, s.lad_n, book, sd, m, out)
        return out

    def view(self, book: int, depth: int = 10) -> BookView:
        """A consistent view of one book: top `depth` levels per side (0: all), ids, counters.

        O(depth); one kernel call and one allocation, as this runs after every event.
        """
        s = self._state
        row = s.books[book].tolist()
        if row[k.B_OPEN]:
            self._check_observable(book)
        n_bids, n_asks = s.lad_n[2 * book : 2 * book + 2].tolist()
        if depth > 0:
            n_bids, n_asks = min(depth, n_bids), min(depth, n_asks)
        out = np.empty((n_bids + n_asks, 3), dtype=np.int64)
        k.top_both_sides(s.levels, s.lad_lvl, s.lad_n, book, n_bids, n_asks, out)
        return BookView(
            instrument_id=row[k.B_INSTRUMENT],
            publisher_id=row[k.B_PUBLISHER],
            ts_event=row[k.B_TS_EVENT],
            ts_recv=row[k.B_TS_RECV],
            sequence=row[k.B_SEQUENCE],
            bids=out[:n_bids],
            asks=out[n_bids:],
            quality=dict(zip(QUALITY_FIELDS, row[k.B_QUALITY : k.B_BBO], strict=True)),
        )

    def snapshot_row(self, book: int, depth: int, out: np.ndarray) -> None:
        """Write the book into an int64 row (rows.SnapshotColumns, width(depth) long):
        publisher, ts_event, ts_recv, sequence, counters, then `depth` levels per side padded
        with UNDEF_PRICE. One compiled call: what the processor does after snapshot-due events."""
        s = self._state
        if s.books[book, k.B_OPEN]:
            self._check_observable(book)
        k.snapshot_row(s, book, depth, out)

    def consolidated(self, books: list[int], depth: int = 10) -> BookView:
        """One instrument across its publishers' books: best prices first, with size and order
        count summed at each price.

        Exact from each book's top `depth` levels: a price in the consolidated top N is within the
        top N of every book that quotes it, since that book's better prices are better
        consolidated prices too.
        """
        if not books:
            raise ValueError("consolidated view of no books")
        views = [self.view(b, depth) for b in books]
        instruments = {v.instrument_id for v in views}
        if len(instruments) != 1:
            raise ValueError(f"books of several instruments: {sorted(instruments)}")
        latest = max(views, key=lambda v: (v.ts_recv, v.ts_event))
        quality = {name: sum(v.quality[name] for v in views) for name in QUALITY_FIELDS}
        return BookView(
            instrument_id=views[0].instrument_id,
            publisher_id=None,
            ts_event=latest.ts_event,
            ts_recv=latest.ts_recv,
            sequence=None,
            bids=_merge_levels([v.bids for v in views], depth, descending=True),
            asks=_merge_levels([v.asks for v in views], depth, descending=False),
            quality=quality,
        )

    def queue(self, book: int, side: str, price: int) -> list[tuple[int, int]]:
        """(order_id, size) of the orders resting at a price, front of the queue first."""
        self._check_observable(book)
        s = self._state
        out = np.empty((max(1, int(self._state.books[book, k.B_ORDERS])), 2), dtype=np.int64)
        n = k.queue_at(s, book, _side_index(side), price, out)
        return [(int(out[i, 0]) & 0xFFFF_FFFF_FFFF_FFFF, int(out[i, 1])) for i in range(n)]

    def order(self, book: int, order_id: int) -> RestingOrder | None:
        """The resting order with that id, or None."""
        s = self._state
        o = int(k.find_order(s, book, _as_i64(order_id)))
        if o == k.EMPTY:
            return None
        row = s.orders[o]
        return RestingOrder(
            side="B" if row[k.O_SIDE] == k.BID else "A",
            price=int(row[k.O_PRICE]),
            size=int(row[k.O_SIZE]),
        )

    def _check_observable(self, book: int) -> None:
        if not self.is_observable(book):
            raise BookNotObservableError(
                f"book {book} is in the middle of an event (no F_LAST record yet)"
            )


def _as_mbo(records: np.ndarray) -> np.ndarray:
    if records.dtype != MBO_DTYPE:
        if records.dtype.itemsize != MBO_DTYPE.itemsize or records.dtype.names is None:
            raise TypeError(f"expected DBN MBO records, got dtype {records.dtype}")
        records = records.view(MBO_DTYPE)
    return records


def _side_index(side: str) -> int:
    if side == "B":
        return k.BID
    if side == "A":
        return k.ASK
    raise ValueError(f"side must be 'B' or 'A', not {side!r}")


def _as_i64(order_id: int) -> int:
    return order_id - (1 << 64) if order_id >= 1 << 63 else order_id


def _pow2(n: int) -> int:
    return 1 << max(1, (n - 1).bit_length())


def _grow_rows(a: np.ndarray, rows: int, fill: int) -> np.ndarray:
    out = np.full((rows, *a.shape[1:]), fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def _merge_levels(sides: list[np.ndarray], depth: int, *, descending: bool) -> np.ndarray:
    stacked = np.concatenate(sides) if sides else _EMPTY_LEVELS
    if len(stacked) == 0:
        return _EMPTY_LEVELS
    prices, inverse = np.unique(stacked[:, 0], return_inverse=True)
    merged = np.zeros((len(prices), 3), dtype=np.int64)
    merged[:, 0] = prices
    np.add.at(merged[:, 1], inverse, stacked[:, 1])
    np.add.at(merged[:, 2], inverse, stacked[:, 2])
    if descending:
        merged = merged[::-1]
    return merged if depth <= 0 else merged[:depth]
