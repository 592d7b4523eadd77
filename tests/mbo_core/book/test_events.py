"""mbo_core.book.events: whole events in F_LAST order, whatever the stream is cut into."""

from __future__ import annotations

import numpy as np

from mbo_core.book.events import EventGate, event_order
from tests.records import PX, add, to_array


def _ids(records: np.ndarray) -> list[int]:
    return [int(i) for i in records["order_id"]]


def test_events_are_released_together_at_their_f_last() -> None:
    recs = to_array(
        [
            add("B", PX, 1, 1, flags=0, publisher_id=1),  # p1's event opens
            add("B", PX, 1, 2, publisher_id=2),  # p2: a whole event
            add("B", PX, 1, 3, flags=0, publisher_id=2),  # p2's next event opens
            add("B", PX, 1, 4, publisher_id=1),  # p1's event closes
            add("B", PX, 1, 5, flags=0, publisher_id=3),  # p3: never closes here
        ]
    )
    order, open_mask = event_order(recs)
    assert order.tolist() == [1, 0, 3]
    assert open_mask.tolist() == [False, False, True, False, True]
    empty_order, empty_open = event_order(recs[:0])
    assert empty_order.tolist() == [] and empty_open.tolist() == []


def test_one_closed_book_is_left_in_place() -> None:
    recs = to_array([add("B", PX, 1, 1, flags=0), add("B", PX, 1, 2), add("B", PX, 1, 3)])
    order, open_mask = event_order(recs)
    assert order.tolist() == [0, 1, 2] and not open_mask.any()
    gate = EventGate()
    ready, origin = gate.feed(recs)
    assert ready is recs and origin.tolist() == [0, 1, 2]


def test_the_gate_holds_open_events_across_feeds() -> None:
    recs = to_array(
        [
            add("B", PX, 1, 1, flags=0, publisher_id=1),
            add("B", PX, 1, 2, publisher_id=2),
            add("B", PX, 1, 3, flags=0, publisher_id=1, instrument_id=7),
            add("B", PX, 1, 4, publisher_id=1),  # closes order 1's event
            add("B", PX, 1, 5, flags=0, publisher_id=2),
        ]
    )
    gate = EventGate()
    ready, origin = gate.feed(recs[:2])
    assert _ids(ready) == [2] and origin.tolist() == [1]
    assert gate.open_records == 1
    ready, origin = gate.feed(recs[2:])
    # Order 1 was held from the first feed: origin -1; then its closing record at index 1.
    assert _ids(ready) == [1, 4] and origin.tolist() == [-1, 1]
    assert gate.open_records == 2
    assert _ids(gate.take_open(7)) == [3]
    assert _ids(gate.take_open()) == [5]
    assert gate.open_records == 0


def test_any_cut_releases_the_same_records_in_the_same_order() -> None:
    rng = np.random.default_rng(5)
    n = 400
    recs = to_array(
        [
            add("B", PX, 1, i, flags=128 if rng.random() < 0.3 else 0,
                publisher_id=int(rng.integers(1, 4)), instrument_id=int(rng.integers(1, 3)))
            for i in range(n)
        ]
    )  # fmt: skip
    whole = EventGate()
    expected = _ids(whole.feed(recs)[0])
    for _ in range(20):
        cuts = np.sort(rng.choice(np.arange(1, n), size=int(rng.integers(1, 30)), replace=False))
        gate = EventGate()
        released: list[int] = []
        for part in np.split(recs, cuts):
            released += _ids(gate.feed(part)[0])
        assert released == expected
        assert sorted(_ids(gate.take_open())) == sorted(_ids(whole.take_open()) or [])
        whole = EventGate()
        whole.feed(recs)
