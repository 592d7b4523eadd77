"""One test per rule of shared/docs/book-rules.md, on hand-built records."""

from __future__ import annotations

import numpy as np
import pytest

from mbo_core.book import (
    F_LAST,
    F_MAYBE_BAD_BOOK,
    F_SNAPSHOT,
    F_TOB,
    UNDEF_PRICE,
    BookEngine,
    BookNotObservableError,
)
from tests.records import PX, Rec, add, cancel, clear, modify, to_array


def run(*recs: Rec, engine: BookEngine | None = None) -> BookEngine:
    engine = engine or BookEngine()
    engine.apply(to_array(recs))
    return engine


def levels(engine: BookEngine, side: str, book: int = 0, depth: int = 0) -> list[tuple[int, ...]]:
    return [tuple(row) for row in engine.levels(book, side, depth).tolist()]


def queue(engine: BookEngine, side: str, price: int, book: int = 0) -> list[tuple[int, int]]:
    return engine.queue(book, side, price)


# ------------------------------------------------------------------------------ Add


def test_add_creates_level_and_queues_fifo() -> None:
    e = run(add("B", 100 * PX, 5, 1), add("B", 100 * PX, 3, 2), add("B", 100 * PX, 7, 3))
    assert levels(e, "B") == [(100 * PX, 15, 3)]
    assert queue(e, "B", 100 * PX) == [(1, 5), (2, 3), (3, 7)]
    assert levels(e, "A") == []


def test_sides_are_sorted_best_first() -> None:
    e = run(
        add("B", 99 * PX, 1, 1),
        add("B", 101 * PX, 2, 2),
        add("B", 100 * PX, 3, 3),
        add("A", 104 * PX, 4, 4),
        add("A", 102 * PX, 5, 5),
        add("A", 103 * PX, 6, 6),
    )
    assert [p for p, _, _ in levels(e, "B")] == [101 * PX, 100 * PX, 99 * PX]
    assert [p for p, _, _ in levels(e, "A")] == [102 * PX, 103 * PX, 104 * PX]


def test_top_n_limits_depth_and_zero_means_all() -> None:
    e = run(*(add("A", (100 + i) * PX, 1, i + 1) for i in range(30)))
    assert len(e.levels(0, "A", 10)) == 10
    assert len(e.levels(0, "A", 0)) == 30
    assert e.levels(0, "A", 10)[0, 0] == 100 * PX
    assert e.levels(0, "A", 10)[-1, 0] == 109 * PX


def test_add_of_resting_order_id_replaces_it_and_is_counted() -> None:
    e = run(add("B", 100 * PX, 5, 1), add("B", 100 * PX, 2, 2), add("B", 101 * PX, 4, 1))
    assert levels(e, "B") == [(101 * PX, 4, 1), (100 * PX, 2, 1)]
    assert e.quality(0)["add_existing_order"] == 1


def test_negative_prices_are_ordered_like_any_other() -> None:
    e = run(add("B", -2 * PX, 1, 1), add("B", -1 * PX, 1, 2), add("A", -PX // 2, 1, 3))
    assert [p for p, _, _ in levels(e, "B")] == [-1 * PX, -2 * PX]
    assert e.view(0).best_ask == -PX // 2


def test_order_ids_above_2_63_round_trip() -> None:
    big = (1 << 64) - 5
    e = run(add("A", 100 * PX, 5, big))
    assert queue(e, "A", 100 * PX) == [(big, 5)]
    order = e.order(0, big)
    assert order is not None and order.size == 5
    e = run(cancel("A", 100 * PX, 5, big), engine=e)
    assert levels(e, "A") == []


# --------------------------------------------------------------------------- Cancel


def test_partial_cancel_keeps_queue_position() -> None:
    e = run(add("A", 100 * PX, 5, 1), add("A", 100 * PX, 5, 2), cancel("A", 100 * PX, 3, 1))
    assert levels(e, "A") == [(100 * PX, 7, 2)]
    assert queue(e, "A", 100 * PX) == [(1, 2), (2, 5)]


def test_full_cancel_removes_order_and_empty_level() -> None:
    e = run(add("A", 100 * PX, 5, 1), add("A", 101 * PX, 5, 2), cancel("A", 100 * PX, 5, 1))
    assert levels(e, "A") == [(101 * PX, 5, 1)]
    assert e.order(0, 1) is None
    assert e.order_count(0) == 1


def test_cancel_of_unknown_order_changes_nothing_and_is_counted() -> None:
    e = run(add("B", 100 * PX, 5, 1), cancel("B", 100 * PX, 5, 999))
    assert levels(e, "B") == [(100 * PX, 5, 1)]
    assert e.quality(0)["cancel_unknown_order"] == 1


def test_cancel_larger_than_resting_removes_order_and_is_counted() -> None:
    e = run(add("B", 100 * PX, 5, 1), add("B", 100 * PX, 1, 2), cancel("B", 100 * PX, 9, 1))
    assert levels(e, "B") == [(100 * PX, 1, 1)]
    assert e.quality(0)["cancel_exceeds_size"] == 1


# --------------------------------------------------------------------------- Modify


def test_modify_size_decrease_keeps_priority() -> None:
    e = run(add("B", 100 * PX, 5, 1), add("B", 100 * PX, 5, 2), modify("B", 100 * PX, 2, 1))
    assert queue(e, "B", 100 * PX) == [(1, 2), (2, 5)]
    assert levels(e, "B") == [(100 * PX, 7, 2)]


def test_modify_same_size_same_price_keeps_priority() -> None:
    e = run(add("B", 100 * PX, 5, 1), add("B", 100 * PX, 5, 2), modify("B", 100 * PX, 5, 1))
    assert queue(e, "B", 100 * PX) == [(1, 5), (2, 5)]


def test_modify_size_increase_loses_priority() -> None:
    e = run(add("B", 100 * PX, 5, 1), add("B", 100 * PX, 5, 2), modify("B", 100 * PX, 6, 1))
    assert queue(e, "B", 100 * PX) == [(2, 5), (1, 6)]
    assert levels(e, "B") == [(100 * PX, 11, 2)]


def test_modify_price_change_moves_to_back_of_new_level() -> None:
    e = run(
        add("A", 101 * PX, 5, 1),
        add("A", 100 * PX, 4, 2),
        add("A", 100 * PX, 3, 3),
        modify("A", 101 * PX, 2, 2),  # to 101, smaller: still loses priority (price changed)
    )
    assert queue(e, "A", 101 * PX) == [(1, 5), (2, 2)]
    assert levels(e, "A") == [(100 * PX, 3, 1), (101 * PX, 7, 2)]


def test_modify_price_change_removes_emptied_level() -> None:
    e = run(add("A", 101 * PX, 5, 1), modify("A", 102 * PX, 5, 1))
    assert levels(e, "A") == [(102 * PX, 5, 1)]


def test_modify_of_unknown_order_is_an_add_and_is_counted() -> None:
    e = run(add("B", 100 * PX, 5, 1), modify("B", 100 * PX, 3, 7))
    assert queue(e, "B", 100 * PX) == [(1, 5), (7, 3)]
    assert e.quality(0)["modify_unknown_order"] == 1


def test_modify_to_other_side_moves_order_and_is_counted() -> None:
    e = run(add("B", 100 * PX, 5, 1), modify("A", 101 * PX, 5, 1))
    assert levels(e, "B") == []
    assert levels(e, "A") == [(101 * PX, 5, 1)]
    assert e.quality(0)["modify_changed_side"] == 1


# ------------------------------------------------------------- Clear, T/F/N, flags


def test_clear_empties_the_book() -> None:
    e = run(add("B", 100 * PX, 5, 1), add("A", 101 * PX, 5, 2), clear())
    assert levels(e, "B") == [] and levels(e, "A") == []
    assert e.order_count(0) == 0
    # Orders cleared are gone: cancelling one is an unknown-order event.
    e = run(cancel("B", 100 * PX, 5, 1), engine=e)
    assert e.quality(0)["cancel_unknown_order"] == 1


def test_clear_touches_only_its_publishers_book() -> None:
    e = run(
        add("B", 100 * PX, 5, 1, publisher_id=1),
        add("B", 100 * PX, 6, 1, publisher_id=2),
        clear(publisher_id=1),
    )
    assert levels(e, "B", book=0) == []
    assert levels(e, "B", book=1) == [(100 * PX, 6, 1)]


@pytest.mark.parametrize("action", ["T", "F", "N"])
def test_trade_fill_none_do_not_change_the_book(action: str) -> None:
    e = run(add("B", 100 * PX, 5, 1), Rec(action, "B", 100 * PX, 5, 1))
    assert levels(e, "B") == [(100 * PX, 5, 1)]
    assert sum(e.quality(0).values()) == 0


def test_fill_then_cancel_updates_the_book_like_the_feed_does() -> None:
    e = run(
        add("A", 100 * PX, 5, 1),
        Rec("T", "B", 100 * PX, 2, 0, flags=0),
        Rec("F", "A", 100 * PX, 2, 1, flags=0),
        cancel("A", 100 * PX, 2, 1),
    )
    assert levels(e, "A") == [(100 * PX, 3, 1)]


def test_side_none_on_book_action_is_counted_not_applied() -> None:
    e = run(add("B", 100 * PX, 5, 1), Rec("A", "N", 100 * PX, 5, 2))
    assert levels(e, "B") == [(100 * PX, 5, 1)]
    assert e.quality(0)["invalid_record"] == 1


def test_maybe_bad_book_flag_is_counted() -> None:
    e = run(add("B", 100 * PX, 5, 1, flags=F_LAST | F_MAYBE_BAD_BOOK), add("B", 99 * PX, 1, 2))
    assert e.quality(0)["maybe_bad_book"] == 1
    assert levels(e, "B") == [(100 * PX, 5, 1), (99 * PX, 1, 1)]


# ----------------------------------------------------------------- top of book


def test_tob_add_replaces_the_whole_side_with_one_level() -> None:
    e = run(
        add("B", 100 * PX, 5, 1),
        add("B", 99 * PX, 5, 2),
        add("A", 101 * PX, 5, 3),
        add("B", 98 * PX, 40, 0, flags=F_LAST | F_TOB),
    )
    assert levels(e, "B") == [(98 * PX, 40, 1)]
    assert levels(e, "A") == [(101 * PX, 5, 1)]


def test_tob_add_with_undef_price_empties_the_side() -> None:
    e = run(add("B", 100 * PX, 40, 0, flags=F_LAST | F_TOB))
    e = run(add("B", UNDEF_PRICE, 0, 0, flags=F_LAST | F_TOB), engine=e)
    assert levels(e, "B") == []


# -------------------------------------------------------------------- snapshot


def test_snapshot_clear_then_adds_rebuilds_book_in_queue_order() -> None:
    e = run(add("B", 100 * PX, 5, 1), add("A", 105 * PX, 1, 9))
    snap = F_SNAPSHOT
    e = run(
        clear(flags=snap),
        add("B", 100 * PX, 4, 2, flags=snap),
        add("B", 100 * PX, 6, 3, flags=snap),
        add("A", 101 * PX, 7, 4, flags=snap | F_LAST),
        engine=e,
    )
    assert queue(e, "B", 100 * PX) == [(2, 4), (3, 6)]
    assert levels(e, "A") == [(101 * PX, 7, 1)]
    assert e.order(0, 1) is None and e.order(0, 9) is None


# --------------------------------------------------------------- visibility


def test_book_is_observable_only_after_f_last() -> None:
    e = run(add("B", 100 * PX, 5, 1, flags=0))
    assert not e.is_observable(0)
    with pytest.raises(BookNotObservableError):
        e.view(0)
    e = run(add("B", 101 * PX, 5, 2), engine=e)
    assert e.is_observable(0)
    assert levels(e, "B") == [(101 * PX, 5, 1), (100 * PX, 5, 1)]


def test_apply_events_yields_each_closed_event_in_order() -> None:
    recs = to_array(
        [
            add("B", 100 * PX, 5, 1, flags=0),
            add("B", 101 * PX, 5, 2),
            add("A", 110 * PX, 5, 3, instrument_id=2),
            add("A", 111 * PX, 5, 4),
        ]
    )
    e = BookEngine()
    seen = [(b, e.view(b).best_bid, e.view(b).best_ask) for b in e.apply_events(recs)]
    assert seen == [(0, 101 * PX, None), (1, None, 110 * PX), (0, 101 * PX, 111 * PX)]


def test_view_carries_last_event_ids() -> None:
    recs = to_array([add("B", 100 * PX, 5, 1, ts_event=123, sequence=77)])
    e = BookEngine()
    e.apply(recs)
    v = e.view(0)
    assert (v.ts_event, v.ts_recv, v.sequence) == (123, 1123, 77)
    assert e.events(0) == 1


# ----------------------------------------------------------- crossed and locked


def test_crossed_book_is_reported_not_fixed() -> None:
    e = run(add("B", 101 * PX, 5, 1), add("A", 100 * PX, 5, 2))
    v = e.view(0)
    assert v.crossed and not v.locked
    assert levels(e, "B") == [(101 * PX, 5, 1)] and levels(e, "A") == [(100 * PX, 5, 1)]


def test_locked_book_is_reported() -> None:
    v = run(add("B", 100 * PX, 5, 1), add("A", 100 * PX, 5, 2)).view(0)
    assert v.locked and not v.crossed


def test_one_sided_book_is_neither_crossed_nor_locked() -> None:
    v = run(add("B", 100 * PX, 5, 1)).view(0)
    assert not v.crossed and not v.locked


# ---------------------------------------------------------- several publishers


def test_books_are_per_instrument_and_publisher() -> None:
    e = run(
        add("B", 100 * PX, 5, 1, publisher_id=1),
        add("B", 100 * PX, 6, 1, publisher_id=2),  # same order id, other venue: other order
        add("B", 100 * PX, 7, 1, instrument_id=2),
    )
    assert [(k.instrument_id, k.publisher_id) for k in e.book_keys()] == [(1, 1), (1, 2), (2, 1)]
    assert [levels(e, "B", book=b) for b in range(3)] == [
        [(100 * PX, 5, 1)],
        [(100 * PX, 6, 1)],
        [(100 * PX, 7, 1)],
    ]


def test_consolidated_view_sums_size_and_count_per_price() -> None:
    e = run(
        add("B", 100 * PX, 5, 1, publisher_id=1),
        add("B", 99 * PX, 1, 2, publisher_id=1),
        add("B", 100 * PX, 6, 1, publisher_id=2),
        add("B", 100 * PX, 2, 2, publisher_id=2),
        add("B", 101 * PX, 1, 3, publisher_id=2),
        add("A", 103 * PX, 4, 4, publisher_id=1),
        add("A", 102 * PX, 9, 5, publisher_id=2, ts_event=2_000_000_000_000_000_000),
    )
    c = e.consolidated([0, 1], depth=10)
    assert c.publisher_id is None and c.sequence is None
    assert c.bids.tolist() == [[101 * PX, 1, 1], [100 * PX, 13, 3], [99 * PX, 1, 1]]
    assert c.asks.tolist() == [[102 * PX, 9, 1], [103 * PX, 4, 1]]
    assert c.ts_event == 2_000_000_000_000_000_000
    assert e.consolidated([0, 1], depth=1).bids.tolist() == [[101 * PX, 1, 1]]


def test_consolidated_view_can_be_crossed_across_publishers() -> None:
    e = run(add("B", 101 * PX, 1, 1, publisher_id=1), add("A", 100 * PX, 1, 1, publisher_id=2))
    assert e.consolidated([0, 1]).crossed


def test_consolidated_view_of_several_instruments_is_refused() -> None:
    e = run(add("B", 100 * PX, 1, 1), add("B", 100 * PX, 1, 1, instrument_id=2))
    with pytest.raises(ValueError, match="several instruments"):
        e.consolidated([0, 1])


# ------------------------------------------------------------ capacity growth


def test_pools_grow_past_their_initial_capacity() -> None:
    rng = np.random.default_rng(7)
    recs = []
    for i in range(3000):
        book = int(rng.integers(0, 20))
        price = int(rng.integers(1, 400)) * PX
        recs.append(add("B" if i % 2 else "A", price, 1 + i % 5, i + 1, instrument_id=book + 1))
    e = BookEngine(order_capacity=4, level_capacity=2, book_capacity=1, ladder_width=2)
    e.apply(to_array(recs))
    assert e.book_count == 20
    assert sum(e.order_count(b) for b in range(20)) == 3000
    # Everything still findable after the indexes were rebuilt.
    for i in (1, 1500, 3000):
        assert e.order(e.book_index(recs[i - 1].instrument_id, 1), i) is not None
    for b in range(20):
        bids = e.levels(b, "B", 0)
        assert (np.diff(bids[:, 0]) < 0).all()
