"""Property tests: random MBO streams through the engine and through tests/reference_book.py.

Streams mix known and unknown order ids, several instruments and publishers, partial events
(F_LAST on some records only), Clears, T/F/N records, bad sides and F_MAYBE_BAD_BOOK, so every
rule and every data-quality path is exercised. At every F_LAST the engine's book must equal the
model's, level by level and queue by queue, and satisfy the structural invariants.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbo_core.book import F_LAST, F_MAYBE_BAD_BOOK, F_TOB, UNDEF_PRICE, BookEngine
from tests.records import PX, Rec, to_array
from tests.reference_book import RefBook


@st.composite
def mbo_streams(draw: st.DrawFn, *, tob: bool, max_size: int) -> list[Rec]:
    """A stream whose Cancels and Modifies mostly target live orders, with sizes and prices
    chosen to hit every priority rule (same, smaller, larger size; same or new price)."""
    n = draw(st.integers(1, max_size))
    live: dict[tuple[int, int, int], tuple[str, int, int]] = {}  # (instr, pub, id) -> side,px,sz
    recs: list[Rec] = []
    for _ in range(n):
        instrument_id = draw(st.integers(1, 2))
        publisher_id = draw(st.integers(1, 2))
        action = draw(st.sampled_from("AAAAACCCCMMMMMTFNR"))
        flags = F_LAST if draw(st.integers(0, 9)) < 7 else 0
        if draw(st.integers(0, 30)) == 0:
            flags |= F_MAYBE_BAD_BOOK
        side = draw(st.sampled_from("BBBBBBBBBBAAAAAAAAAAN"))
        price = draw(st.integers(95, 105)) * PX
        size = draw(st.integers(0, 12))
        order_id = draw(st.integers(1, 25))
        mine = [k for k in live if k[:2] == (instrument_id, publisher_id)]
        if action in "CM" and mine and draw(st.integers(0, 4)) > 0:
            key = draw(st.sampled_from(mine))
            order_id = key[2]
            side, price, resting = live[key]
            how = draw(st.sampled_from(["same", "less", "more", "reprice", "any"]))
            size = {"same": resting, "less": max(0, resting - 1), "more": resting + 1}.get(
                how, size
            )
            if how == "reprice":
                price = draw(st.integers(95, 105)) * PX
        if tob and action == "A" and draw(st.integers(0, 4)) == 0:
            flags |= F_TOB
            if draw(st.booleans()):
                price = UNDEF_PRICE
        recs.append(Rec(action, side, price, size, order_id, flags, instrument_id, publisher_id))
        _track(live, recs[-1])
    return recs


def _track(live: dict[tuple[int, int, int], tuple[str, int, int]], r: Rec) -> None:
    """Rough bookkeeping of live orders, only to aim the generator (the model is the oracle)."""
    key = (r.instrument_id, r.publisher_id, r.order_id)
    if r.action == "R":
        for k in [k for k in live if k[:2] == key[:2]]:
            del live[k]
    elif r.side in "BA" and r.action in "AM" and not r.flags & F_TOB:
        live[key] = (r.side, r.price, r.size)
    elif r.action == "C" and key in live:
        side, price, size = live[key]
        if r.size >= size:
            del live[key]
        else:
            live[key] = (side, price, size - r.size)


def replay_and_compare(recs: list[Rec], *, check_invariants: bool) -> None:
    array = to_array(recs)
    engine = BookEngine(order_capacity=2, level_capacity=2, book_capacity=1, ladder_width=1)
    models: dict[tuple[int, int], RefBook] = {}
    i = 0
    for book in engine.apply_events(array):
        # Feed the model everything up to this event's closing record.
        while True:
            r = recs[i]
            model = models.setdefault((r.instrument_id, r.publisher_id), RefBook())
            model.apply(r.action, r.side, r.price, r.size, r.order_id, r.flags)
            i += 1
            if r.flags & F_LAST:
                break
        key = engine.book_keys()[book]
        assert (key.instrument_id, key.publisher_id) == (r.instrument_id, r.publisher_id)
        assert_same_book(engine, book, models[(r.instrument_id, r.publisher_id)])
        if check_invariants:
            assert_invariants(engine, book)


def assert_same_book(engine: BookEngine, book: int, model: RefBook) -> None:
    for side in ("B", "A"):
        got = [tuple(level) for level in engine.levels(book, side, 0).tolist()]
        assert got == model.levels(side), side
        for price in model.sides[side]:
            expected = [(o, s) for o, s in model.sides[side][price] if o != -1]
            assert engine.queue(book, side, price) == expected
    quality = {name: n for name, n in engine.quality(book).items() if n}
    assert quality == model.quality


def assert_invariants(engine: BookEngine, book: int) -> None:
    seen: set[int] = set()
    for side in ("B", "A"):
        levels = engine.levels(book, side, 0)
        prices = levels[:, 0]
        steps = np.diff(prices)
        assert (steps < 0).all() if side == "B" else (steps > 0).all()  # strictly ordered
        for price, size, count in levels.tolist():
            assert size >= 0
            orders = engine.queue(book, side, price)
            assert count == len(orders) > 0
            assert size == sum(s for _, s in orders)
            for order_id, order_size in orders:
                assert order_id not in seen  # every order in exactly one level
                seen.add(order_id)
                resting = engine.order(book, order_id)
                assert resting is not None
                assert (resting.side, resting.price, resting.size) == (side, price, order_size)
    assert engine.order_count(book) == len(seen)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mbo_streams(tob=False, max_size=150))
def test_engine_matches_model_and_keeps_invariants(recs: list[Rec]) -> None:
    replay_and_compare(recs, check_invariants=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mbo_streams(tob=True, max_size=120))
def test_engine_matches_model_with_top_of_book_records(recs: list[Rec]) -> None:
    replay_and_compare(recs, check_invariants=False)
