"""One rule for the consolidated book, in `mbo book` and in the processor, whatever the cuts.

The rule (mbo_core/book/events.py): at any F_LAST, the consolidated book of an instrument is the
merge of every publisher's book at its last consistent state; a publisher in the middle of an
event counts with its state before that event, and is never left out. Checked by hand on a
small golden stream, and by hypothesis on random interleaved multi-publisher streams cut into
random batches and messages, against a reference written here from the rule alone.
"""

from __future__ import annotations

import itertools
import pickle
from collections import defaultdict
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from book_processor.publishing import BookPublisher
from mbo_core.rebuild import rebuild_batches
from mbo_core.schemas import BookJson
from mbo_core.wire import end_of_stream_headers, records_headers
from tests.published import bbo_rows, snapshot_rows
from tests.records import PX, Rec, add, cancel, to_array

Level = tuple[int, int, int]  # price (whole units), size, count
Side = list[Level]

#: Two publishers of instrument 1; p2's second event (records 2, 4, 6) is open while p1 closes
#: two events of its own.
GOLDEN = [
    add("B", 100 * PX, 2, 1, publisher_id=1),  # 0: p1 closes
    add("B", 100 * PX, 3, 10, publisher_id=2),  # 1: p2 closes
    add("B", 101 * PX, 4, 11, publisher_id=2, flags=0),  # 2: p2 opens an event
    add("A", 103 * PX, 1, 2, publisher_id=1),  # 3: p1 closes, p2 mid-event
    cancel("B", 100 * PX, 3, 10, publisher_id=2, flags=0),  # 4: p2 still open
    cancel("B", 100 * PX, 2, 1, publisher_id=1),  # 5: p1 closes, p2 mid-event
    add("A", 102 * PX, 5, 12, publisher_id=2),  # 6: p2's event closes
]
#: The consolidated lines, by hand: (record, bids, asks).
GOLDEN_CONSOLIDATED: list[tuple[int, Side, Side]] = [
    (1, [(100, 5, 2)], []),
    (3, [(100, 5, 2)], [(103, 1, 1)]),  # p2 counts at 100 x 3 (its state before the open event)
    (5, [(100, 3, 1)], [(103, 1, 1)]),  # p1's bid is gone; p2 still at its last closed state
    (6, [(101, 4, 1)], [(102, 5, 1), (103, 1, 1)]),
]


def _levels(side: list[dict[str, Any]]) -> Side:
    return [(int(float(lv["price"])), lv["size"], lv["count"]) for lv in side]


def _book_lines(records: np.ndarray, cuts: list[int], depth: int = 10) -> list[BookJson]:
    lines: list[BookJson] = []
    rebuild_batches(np.split(records, cuts), source="t", depth=depth, on_event=lines.append)
    return lines


def _published(
    records: np.ndarray, cuts: list[int], *, interval_ns: int = 1, depth: int = 10
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(BBO rows, snapshots) of a publisher fed `records` of ONE instrument cut at `cuts`."""
    publisher = BookPublisher(0, snapshot_interval_ns=interval_ns, snapshot_depth=depth)
    key = str(int(records["instrument_id"][0])).encode()
    outputs = []
    parts = np.split(records, cuts)
    for offset, part in enumerate(parts):
        headers = records_headers(dataset="T", symbol=None, sent_ns=1, records=len(part))
        outputs.append(publisher.process(offset, key, part.tobytes(), headers))
    eos = end_of_stream_headers(dataset="T", symbol=None, sent_ns=2)
    outputs.append(publisher.process(len(parts), key, b"", eos))
    rows: list[dict[str, Any]] = []
    snaps: list[dict[str, Any]] = []
    for out in outputs:
        if out.bbo is not None:
            rows += bbo_rows(out.bbo)
        if out.snapshots is not None:
            snaps += snapshot_rows(out.snapshots)
    return rows, snaps


def _all_cuts(n: int) -> list[list[int]]:
    inner = range(1, n)
    return [list(c) for r in range(n) for c in itertools.combinations(inner, r)]


def test_golden_consolidated_lines_for_every_cut() -> None:
    records = to_array(GOLDEN)
    for cuts in _all_cuts(len(GOLDEN)):
        lines = _book_lines(records, cuts)
        consolidated = [
            (_levels(line["bids"]), _levels(line["asks"]))
            for line in lines
            if line["publisher_id"] is None
        ]
        assert consolidated == [(b, a) for _, b, a in GOLDEN_CONSOLIDATED], cuts
        # The processor, cut into messages at the same places, snapshots the same books.
        _rows, snaps = _published(records, cuts)
        snapshot_lines = [
            (_levels(s["bids"]), _levels(s["asks"]))
            for s in snaps
            if s["publisher_id"] is None and not s["final"]
        ]
        assert snapshot_lines == consolidated, cuts
        assert [s["record_index"] for s in snaps if s["publisher_id"] is None and not s["final"]]


def test_golden_consolidated_bbo_rows_for_every_cut() -> None:
    records = to_array(GOLDEN)
    expected = [(None, "100", 5, 2, None), (None, "100", 5, 2, "103"),
                (None, "100", 3, 1, "103"), (None, "101", 4, 1, "102")]  # fmt: skip
    for cuts in _all_cuts(len(GOLDEN)):
        rows, _ = _published(records, cuts)
        consolidated = [
            (r["publisher_id"], r["bid_price"], r["bid_size"], r["bid_count"], r["ask_price"])
            for r in rows
            if r["publisher_id"] is None
        ]
        assert consolidated == expected, cuts


def test_unterminated_records_are_counted_alike_offline_and_in_the_processor() -> None:
    records = to_array([*GOLDEN, add("B", 99 * PX, 1, 13, publisher_id=1, flags=0),
                        cancel("A", 102 * PX, 5, 12, publisher_id=2, flags=0)])  # fmt: skip
    (offline,) = [
        b for b in rebuild_batches([records], source="t").books if b["publisher_id"] is None
    ]
    assert offline["quality"]["unterminated_event_records"] == 2
    for cuts in ([], [3], [7], [8]):
        _rows, snaps = _published(records, cuts)
        final = [s for s in snaps if s["final"]]
        assert [s["publisher_id"] for s in final] == [1, 2, None]
        assert final[-1]["quality"] == offline["quality"]
        assert (_levels(final[-1]["bids"]), _levels(final[-1]["asks"])) == (
            _levels(offline["bids"]),
            _levels(offline["asks"]),
        )


# ------------------------------------------------------------------- property


class _Reference:
    """The rule, from scratch: per book a level map; a copy taken at each F_LAST is its last
    consistent state; consolidated = merge of those copies over the books that have one."""

    def __init__(self) -> None:
        self.working: dict[tuple[int, int], dict[int, tuple[str, int, int]]] = defaultdict(dict)
        self.consistent: dict[tuple[int, int], dict[int, tuple[str, int, int]]] = {}

    def apply(self, r: np.void) -> list[tuple[int | None, Side, Side]]:
        book = (int(r["instrument_id"]), int(r["publisher_id"]))
        orders = self.working[book]
        order_id, side = int(r["order_id"]), chr(int(r["side"]))
        if chr(int(r["action"])) == "A":
            orders[order_id] = (side, int(r["price"]) // PX, int(r["size"]))
        elif order_id in orders:  # a cancel of the whole order (the streams below do only that)
            del orders[order_id]
        if not int(r["flags"]) & 128:
            return []
        self.consistent[book] = dict(orders)
        lines: list[tuple[int | None, Side, Side]] = [
            (book[1], *self._sides([self.consistent[book]]))
        ]
        siblings = [s for (i, _p), s in self.consistent.items() if i == book[0]]
        if len(siblings) > 1:
            lines.append((None, *self._sides(siblings)))
        return lines

    @staticmethod
    def _sides(books: list[dict[int, tuple[str, int, int]]]) -> tuple[Side, Side]:
        levels: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        for orders in books:
            for side, price, size in orders.values():
                levels[(side, price)][0] += size
                levels[(side, price)][1] += 1
        bids = sorted(((p, s, c) for (sd, p), (s, c) in levels.items() if sd == "B"), reverse=True)
        asks = sorted((p, s, c) for (sd, p), (s, c) in levels.items() if sd == "A")
        return bids[:10], asks[:10]


@st.composite
def _streams(draw: st.DrawFn) -> list[Rec]:
    """Interleaved events of 2-3 publishers of one instrument: adds, and cancels of their own
    resting orders; each book's records stay in order."""
    books: list[list[Rec]] = []
    next_id = 1
    for publisher in range(1, draw(st.integers(2, 3)) + 1):
        resting: list[tuple[int, str, int]] = []
        records: list[Rec] = []
        for _ in range(draw(st.integers(1, 6))):
            size = draw(st.integers(1, 4))
            for i in range(size):
                flags = 128 if i == size - 1 else 0
                cancels: bool = draw(st.booleans())
                if resting and cancels:
                    order_id, side, price = resting.pop(draw(st.integers(0, len(resting) - 1)))
                    records.append(cancel(side, price * PX, 1, order_id, publisher_id=publisher,
                                          flags=flags))  # fmt: skip
                else:
                    side = draw(st.sampled_from("AB"))
                    price = draw(st.integers(100, 104)) + (3 if side == "A" else 0)
                    records.append(add(side, price * PX, 1, next_id, publisher_id=publisher,
                                       flags=flags))  # fmt: skip
                    resting.append((next_id, side, price))
                    next_id += 1
        books.append(records)
    # A random interleaving that keeps each book's own order.
    stream: list[Rec] = []
    positions = [0] * len(books)
    while any(p < len(b) for p, b in zip(positions, books, strict=True)):
        live = [i for i, b in enumerate(books) if positions[i] < len(b)]
        pick = draw(st.sampled_from(live))
        stream.append(books[pick][positions[pick]])
        positions[pick] += 1
    return stream


@settings(max_examples=150, deadline=None)
@given(stream=_streams(), data=st.data())
def test_random_interleavings_and_cuts_follow_the_rule(
    stream: list[Rec], data: st.DataObject
) -> None:
    records = to_array(stream)
    # Cancels carry size 1 and orders are size 1: each cancel removes its whole order.
    reference = _Reference()
    expected = [line for r in records for line in reference.apply(r)]
    cut_points = (
        data.draw(st.sets(st.integers(1, len(records) - 1), max_size=8))
        if len(records) > 1
        else set()
    )
    cuts = sorted(cut_points)
    lines = _book_lines(records, cuts)
    assert [
        (ln["publisher_id"], _levels(ln["bids"]), _levels(ln["asks"])) for ln in lines
    ] == expected
    # The processor, fed the same cuts as Kafka messages: its snapshots (one per event, interval
    # 1 ns) are the same books, consolidated ones included.
    _rows, snaps = _published(records, cuts)
    got = [
        (s["publisher_id"], _levels(s["bids"]), _levels(s["asks"])) for s in snaps if not s["final"]
    ]
    assert got == expected


def test_a_checkpointed_publisher_keeps_the_open_event() -> None:
    """A checkpoint is the pickled publisher: records held for an open event travel with it."""
    records = to_array(GOLDEN)
    key = b"1"
    headers = records_headers(dataset="T", symbol=None, sent_ns=1, records=3)
    first, rest = records[:3], records[3:]  # p2's event opened in the first message
    straight = BookPublisher(0, snapshot_interval_ns=1, snapshot_depth=10)
    straight.process(0, key, first.tobytes(), headers)
    restored = pickle.loads(pickle.dumps(straight))
    assert restored.gate.open_records == 1
    a = straight.process(1, key, rest.tobytes(), headers)
    b = restored.process(1, key, rest.tobytes(), headers)
    assert (a.bbo, a.snapshots) == (b.bbo, b.snapshots)
