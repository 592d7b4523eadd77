"""The market simulation: instruments, their books per publisher, and the merged record stream.

Each (instrument, publisher) pair is an independent book: its own true book (matching.py), its own
random stream (seeded from (seed, instrument, publisher)), its own order ids and clock. Books share
only the instrument's fair value (a path fixed by the seed, so that publishers quote one price)
and the sequence counter of their (publisher, channel), which is numbered after merging.

Simulated time advances in windows. In each window every book, one after the other, generates its
events whose ts_recv falls before the window's end (events.run_window, compiled); then the
window's events are sorted by (ts_recv, book) with numpy, sequence numbers are assigned per
(publisher, channel) in that order (one per message: a trade event is two messages, its trade
summary and its book update), and the records go out as one chunk. So the stream is sorted by
ts_recv like a Databento capture, and each book's events keep their order. Event shapes:
events.py.

`records` is exact: an event that would not fit in what is left is replaced by an Add (one record,
always possible), so the stream ends at an event boundary with exactly that many records. When
the count runs out inside the last window, the books after the one that used it up generate
nothing more in that window; windows shrink toward the end (at most 1/16 of the records still to
generate) so that this quieter stretch is a sliver of the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from generator import events as ev
from generator import matching as mt
from generator.flow import POOLS, FairValues, FlowParams
from mbo_core.book import kernel
from mbo_core.records import MBO_DTYPE, MBO_LENGTH_WORDS, RTYPE_MBO

#: 2025-01-06 14:30:00 UTC (a Monday, 09:30 in New York): the default start of the clock.
DEFAULT_START_NS = 1_736_173_800_000_000_000
DEFAULT_DATASET = "SYNTH.MDP3"
MAX_INSTRUMENTS = 1_000
MAX_PUBLISHERS = 16
#: Books (instruments x publishers) simulated at once.
MAX_BOOKS = 4_000
#: Instruments that share one channel (and so one sequence counter per publisher).
INSTRUMENTS_PER_CHANNEL = 8
#: Records per window (and so per chunk) the window length aims at...
WINDOW_RECORDS = 1 << 17
#: ...but never more than this share of the records still to generate, so that the window in
#: which the count runs out (and later books stop early) is a small part of the file.
WINDOW_SHARE_OF_REST = 1 / 16
MIN_WINDOW_RECORDS = 64
_MONTH_CODES = "FGHJKMNQUVXZ"
_ORDER_ID_BASE = 8_000_000_000_000
_ORDER_ID_SPACING = 1_000_000_000
_PRICE_SCALE = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Product:
    """A family of invented futures: tick size and typical price, both in 1e-9 units."""

    name: str
    tick: int
    typical_price: int


#: Tick sizes and price levels of real futures families, so consumers meet varied decimals.
PRODUCTS: tuple[Product, ...] = (
    Product("energy", 10_000_000, 65 * _PRICE_SCALE),  # 0.01, like CL
    Product("equity index", 250_000_000, 5_000 * _PRICE_SCALE),  # 0.25, like ES
    Product("treasury", 15_625_000, 110 * _PRICE_SCALE),  # 1/64, like ZN
    Product("metal", 100_000_000, 2_000 * _PRICE_SCALE),  # 0.1, like GC
    Product("natural gas", 1_000_000, 3 * _PRICE_SCALE),  # 0.001, like NG
    Product("currency", 50_000, 1_100_000_000),  # 0.00005, like 6E
)


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    index: int
    symbol: str
    instrument_id: int
    product: str
    tick: int
    start_price: int
    channel_id: int


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """What to generate. `records` is the exact number of records of the stream."""

    instruments: int = 1
    records: int = 100_000
    publishers: int = 1
    seed: int = 0
    start_ns: int = DEFAULT_START_NS
    dataset: str = DEFAULT_DATASET
    flow: FlowParams = field(default_factory=FlowParams)

    def __post_init__(self) -> None:
        if not 1 <= self.instruments <= MAX_INSTRUMENTS:
            raise ValueError(f"instruments must be within 1..{MAX_INSTRUMENTS}")
        if not 1 <= self.publishers <= MAX_PUBLISHERS:
            raise ValueError(f"publishers must be within 1..{MAX_PUBLISHERS}")
        if self.instruments * self.publishers > MAX_BOOKS:
            raise ValueError(f"instruments x publishers must be at most {MAX_BOOKS}")
        if self.records < 1:
            raise ValueError("records must be >= 1")
        if not 0 <= self.seed < 1 << 63:
            raise ValueError("seed must be within 0..2**63-1")
        if not 0 < self.start_ns < 1 << 62:
            raise ValueError("start must be a positive UNIX time in nanoseconds")

    def instrument_specs(self) -> list[InstrumentSpec]:
        return [instrument_spec(self.seed, i, self.start_ns) for i in range(self.instruments)]

    @property
    def publisher_ids(self) -> list[int]:
        """GLBX-style publisher ids 1..P."""
        return list(range(1, self.publishers + 1))


def instrument_spec(seed: int, index: int, start_ns: int) -> InstrumentSpec:
    """The invented instrument number `index`: a futures-like symbol (root X + two letters, month
    code, year digit: XAAF6, XAAG6, ...), id 100001 + index, a product family (by index) and a
    start price near the family's typical price (by seed)."""
    product = PRODUCTS[index % len(PRODUCTS)]
    root = index // len(_MONTH_CODES)
    year = (1970 + start_ns // 31_556_952_000_000_000 + 1) % 10
    symbol = f"X{chr(65 + root // 26 % 26)}{chr(65 + root % 26)}{_MONTH_CODES[index % 12]}{year}"
    rng = np.random.default_rng([seed, index, 0x1A57])
    ticks = round(product.typical_price * (0.8 + 0.4 * float(rng.random())) / product.tick)
    return InstrumentSpec(
        index=index,
        symbol=symbol,
        instrument_id=100_001 + index,
        product=product.name,
        tick=product.tick,
        start_price=ticks * product.tick,
        channel_id=1 + index // INSTRUMENTS_PER_CHANNEL,
    )


@dataclass(frozen=True, slots=True)
class BookState:
    """The generator's true book of one (instrument, publisher) after its last event."""

    instrument: InstrumentSpec
    publisher_id: int
    events: int
    ts_event: int  # of its last event (its last F_LAST record)
    ts_recv: int
    sequence: int  # of its last F_LAST record
    bids: np.ndarray  # int64 (n, 3): price, size, order count, best first
    asks: np.ndarray


class MarketSimulator:
    """Every book of a configuration, merged into one record stream (see the module doc)."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.instruments = config.instrument_specs()
        publishers = config.publisher_ids
        self._tables = config.flow.compiled()
        n_books = len(self.instruments) * len(publishers)
        self._arrays = mt.BookArrays.allocate(n_books, POOLS)
        self._bk = np.zeros((n_books, ev.BK_COLUMNS), dtype=np.int64)
        self._rng = np.zeros(n_books, dtype=np.uint64)
        self._book_spec: list[InstrumentSpec] = []
        self._book_publisher_ids: list[int] = []
        groups: dict[tuple[int, int], int] = {}
        book_group: list[int] = []
        for spec in self.instruments:
            for publisher in publishers:
                b = len(self._book_spec)
                self._book_spec.append(spec)
                self._book_publisher_ids.append(publisher)
                book_group.append(groups.setdefault((publisher, spec.channel_id), len(groups)))
                self._rng[b] = np.random.default_rng([config.seed, spec.index, publisher]).integers(
                    0, 1 << 64, dtype=np.uint64
                )
                row = self._bk[b]
                row[ev.BK_FAIR_ROW] = spec.index
                row[ev.BK_TICK] = spec.tick
                # Every publisher numbers one instrument's orders from the same base: ids of
                # different venues collide, as they do in reality; consumers key orders by book.
                row[ev.BK_NEXT_ID] = _ORDER_ID_BASE + spec.index * _ORDER_ID_SPACING
                row[ev.BK_TS_EVENT] = config.start_ns
                row[ev.BK_TS_RECV] = config.start_ns
                row[ev.BK_LAST_TS_EVENT] = config.start_ns
                row[ev.BK_LAST_TS_RECV] = config.start_ns
                ev.schedule_next(self._bk, self._rng, b, self._tables.gap)
        self._fair = FairValues(
            [spec.start_price / spec.tick for spec in self.instruments],
            config.start_ns,
            config.flow.fair_volatility_ticks,
            config.seed,
        )
        self._book_group = np.array(book_group, dtype=np.int64)
        # Each (publisher, channel) starts at its own seeded sequence number, as a live feed would.
        self._group_sequence = np.array(
            [
                np.random.default_rng([config.seed, publisher, channel, 0x5E0]).integers(
                    1_000_000, 100_000_000
                )
                for publisher, channel in groups
            ],
            dtype=np.int64,
        )
        self._last_sequence = np.zeros(n_books, dtype=np.int64)
        self._book_publisher = np.array(self._book_publisher_ids, dtype=np.uint16)
        self._book_instrument = np.array(
            [spec.instrument_id for spec in self._book_spec], dtype=np.uint32
        )
        self._book_channel = np.array([spec.channel_id for spec in self._book_spec], dtype=np.uint8)
        self._out_rec = np.zeros((WINDOW_RECORDS * 2, ev.RECORD_COLUMNS), dtype=np.int64)
        self._out_evt = np.zeros((WINDOW_RECORDS * 2, ev.EVENT_COLUMNS), dtype=np.int64)
        self._scratch = np.zeros(1024, dtype=np.int64)
        self.records = 0
        self.events = 0
        self._window_start = config.start_ns
        # Records per ns of simulated time, learnt from each window; the model's ~3 events/s
        # per book is the first guess.
        self._rate = 3e-9 * n_books

    @property
    def book_count(self) -> int:
        return len(self._book_spec)

    def chunks(self) -> Iterator[np.ndarray]:
        """The stream as MBO_DTYPE arrays of whole events, ~WINDOW_RECORDS each,
        `config.records` in all, sorted by ts_recv. Iterate once."""
        while self.records < self.config.records:
            rest = self.config.records - self.records
            aim = min(WINDOW_RECORDS, max(MIN_WINDOW_RECORDS, int(rest * WINDOW_SHARE_OF_REST)))
            start = self._window_start
            until = start + max(1, int(aim / self._rate))
            chunk = self._window(until, rest)
            # Learn the record rate for the next window's length, moving at most 4x at once.
            rate = len(chunk) / (until - start)
            self._rate = min(max(rate, self._rate / 4), self._rate * 4)
            self._window_start = until
            if len(chunk):
                self.records += len(chunk)
                self.events += int(np.count_nonzero(chunk["flags"] & kernel.F_LAST))
                yield chunk

    def book_states(self, depth: int = 0) -> list[BookState]:
        """The true books that have seen at least one event, in book order (instrument, then
        publisher): top `depth` levels per side (0: all)."""
        states = []
        out = np.zeros((max(1, int(self._arrays.lad_n.max(initial=0))), 3), dtype=np.int64)
        for b, spec in enumerate(self._book_spec):
            row = self._bk[b]
            if row[ev.BK_EVENTS] == 0:
                continue
            sides = []
            for side in (mt.BID, mt.ASK):
                m = mt.side_levels(self._arrays, b, side, depth, out)
                sides.append(out[:m].copy())
            states.append(
                BookState(
                    instrument=spec,
                    publisher_id=self._book_publisher_ids[b],
                    events=int(row[ev.BK_EVENTS]),
                    ts_event=int(row[ev.BK_LAST_TS_EVENT]),
                    ts_recv=int(row[ev.BK_LAST_TS_RECV]),
                    sequence=int(self._last_sequence[b]),
                    bids=sides[0],
                    asks=sides[1],
                )
            )
        return states

    def last_ts_recv(self) -> int:
        """ts_recv of the stream's last record so far (the configured start before any)."""
        seen = self._bk[:, ev.BK_EVENTS] > 0
        return int(self._bk[seen, ev.BK_LAST_TS_RECV].max(initial=self.config.start_ns))

    def _window(self, until: int, budget: int) -> np.ndarray:
        # Events of this window have ts_event >= start - 50 ms (latency cap): one step of margin.
        fair, first_step = self._fair.covering(self._window_start - FairValues.STEP_NS, until)
        fair_first_ns = self.config.start_ns + first_step * FairValues.STEP_NS
        cursor = np.zeros(4, dtype=np.int64)
        while True:
            status = ev.run_window(
                self._arrays,
                self._bk,
                self._rng,
                self._tables,
                fair,
                fair_first_ns,
                FairValues.STEP_NS,
                until,
                budget,
                self._out_rec,
                self._out_evt,
                self._scratch,
                cursor,
            )
            if status == ev.DONE:
                break
            if status == ev.NEED_OUTPUT:
                self._out_rec = _grown(self._out_rec, int(cursor[ev.C_RECORDS]))
                self._out_evt = _grown(self._out_evt, int(cursor[ev.C_EVENTS]))
            elif status == ev.NEED_SCRATCH:
                self._scratch = np.zeros(self._scratch.shape[0] * 2, dtype=np.int64)
            else:
                self._arrays = self._arrays.grow(status)
        return self._merge(
            self._out_rec[: cursor[ev.C_RECORDS]], self._out_evt[: cursor[ev.C_EVENTS]]
        )

    def _merge(self, rec: np.ndarray, evt: np.ndarray) -> np.ndarray:
        """One window's records sorted by (ts_recv, book), numbered per (publisher, channel)."""
        n_events = len(evt)
        if n_events == 0:
            return np.empty(0, dtype=MBO_DTYPE)
        counts = evt[:, ev.E_RECORDS]
        first_record = np.cumsum(counts) - counts
        # A trade event is two messages (trade summary, then book update); others one.
        messages = 1 + (rec[first_record, ev.R_ACTION] == kernel.ACTION_TRADE).astype(np.int64)

        # Stream order. lexsort is stable and each book's events were generated in order.
        order = np.lexsort((evt[:, ev.E_BOOK], evt[:, ev.E_TS_RECV]))
        evt = evt[order]
        counts = counts[order]
        messages = messages[order]
        first_out = np.cumsum(counts) - counts
        of_record = np.repeat(np.arange(n_events), counts)
        rec = rec[np.repeat(first_record[order] - first_out, counts) + np.arange(len(rec))]
        book = evt[:, ev.E_BOOK]

        # Sequence numbers: each (publisher, channel) numbers its messages in stream order.
        group = self._book_group[book]
        by_group = np.argsort(group, kind="stable")
        sorted_group = group[by_group]
        sorted_messages = messages[by_group]
        before = np.cumsum(sorted_messages) - sorted_messages
        starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
        within = before - np.repeat(before[starts], np.diff(np.r_[starts, n_events]))
        first_sequence = np.empty(n_events, dtype=np.int64)
        first_sequence[by_group] = self._group_sequence[sorted_group] + within + 1
        self._group_sequence += np.bincount(
            group, weights=messages, minlength=len(self._group_sequence)
        ).astype(np.int64)
        last_event = np.full(self.book_count, -1, dtype=np.int64)
        np.maximum.at(last_event, book, np.arange(n_events))
        seen = last_event >= 0
        last = last_event[seen]
        self._last_sequence[seen] = first_sequence[last] + messages[last] - 1

        actions = rec[:, ev.R_ACTION]
        record_book = book[of_record]
        out = np.empty(len(rec), dtype=MBO_DTYPE)
        out["length"] = MBO_LENGTH_WORDS
        out["rtype"] = RTYPE_MBO
        out["publisher_id"] = self._book_publisher[record_book]
        out["instrument_id"] = self._book_instrument[record_book]
        out["ts_event"] = evt[of_record, ev.E_TS_EVENT]
        out["order_id"] = rec[:, ev.R_ORDER_ID]
        out["price"] = rec[:, ev.R_PRICE]
        out["size"] = rec[:, ev.R_SIZE]
        out["flags"] = rec[:, ev.R_FLAGS]
        out["channel_id"] = self._book_channel[record_book]
        out["action"] = actions
        out["side"] = rec[:, ev.R_SIDE]
        out["ts_recv"] = evt[of_record, ev.E_TS_RECV]
        out["ts_in_delta"] = evt[of_record, ev.E_IN_DELTA]
        # In a trade event the book update records (all but T and F) are the second message.
        second = (
            (messages[of_record] == 2)
            & (actions != kernel.ACTION_TRADE)
            & (actions != kernel.ACTION_FILL)
        )
        out["sequence"] = first_sequence[of_record] + second
        return out


def _grown(a: np.ndarray, keep: int) -> np.ndarray:
    out = np.zeros((a.shape[0] * 2, a.shape[1]), dtype=a.dtype)
    out[:keep] = a[:keep]
    return out
