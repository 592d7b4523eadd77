"""The generator's true books: price-time priority and the Modify rules of book-rules.md."""

from __future__ import annotations

import numpy as np
import pytest

from generator import matching as mt
from generator.matching import ASK, BID, BookArrays

POOLS = 2


class Book:
    """One book (index 0) over BookArrays, growing arrays as room_for_event asks."""

    def __init__(self, books: int = 1) -> None:
        self.s = BookArrays.allocate(books, POOLS, orders_per_book=2)
        self.slots: dict[int, int] = {}

    def _room(self, b: int) -> None:
        while (need := mt.room_for_event(self.s, b, POOLS)) != mt.ROOM_OK:
            self.s = self.s.grow(need)

    def add(
        self, order_id: int, side: int, price: int, size: int, pool: int = 0, b: int = 0
    ) -> None:
        self._room(b)
        self.slots[order_id] = mt.add_order(self.s, b, POOLS, order_id, side, price, size, pool)

    def modify(self, order_id: int, price: int, size: int) -> None:
        self._room(0)
        mt.modify_order(self.s, 0, self.slots[order_id], price, size)

    def remove(self, order_id: int) -> None:
        mt.remove_order(self.s, 0, POOLS, self.slots.pop(order_id))

    def levels(self, side: int, b: int = 0) -> list[tuple[int, int, int]]:
        out = np.zeros((int(self.s.lad_n.max()) + 1, 3), dtype=np.int64)
        n = mt.side_levels(self.s, b, side, 0, out)
        return [tuple(row) for row in out[:n].tolist()]

    def queue(self, b: int = 0) -> list[tuple[int, int, int, int]]:
        out = np.zeros((int(self.s.book_orders[b]) + 1, 4), dtype=np.int64)
        n = mt.book_queue(self.s, b, out)
        return [tuple(row) for row in out[:n].tolist()]


def test_levels_are_best_first_with_total_size_and_count() -> None:
    book = Book()
    book.add(1, BID, 100, 5)
    book.add(2, BID, 101, 1)
    book.add(3, BID, 100, 2)
    book.add(4, ASK, 103, 7)
    book.add(5, ASK, 102, 1)
    assert book.levels(BID) == [(101, 1, 1), (100, 7, 2)]
    assert book.levels(ASK) == [(102, 1, 1), (103, 7, 1)]
    assert (mt.best_price(book.s, 0, BID), mt.best_price(book.s, 0, ASK)) == (101, 102)


def test_queues_are_fifo_and_the_snapshot_order_lists_them_front_first() -> None:
    book = Book()
    for order_id in (10, 11, 12):
        book.add(order_id, BID, 100, order_id)
    book.add(13, BID, 99, 1)
    book.add(14, ASK, 105, 2)
    assert book.queue() == [
        (10, BID, 100, 10),
        (11, BID, 100, 11),
        (12, BID, 100, 12),
        (13, BID, 99, 1),
        (14, ASK, 105, 2),
    ]


def test_modify_keeps_priority_only_for_a_smaller_size_at_the_same_price() -> None:
    book = Book()
    for order_id in (1, 2, 3):
        book.add(order_id, BID, 100, 5)
    book.modify(1, 100, 4)  # smaller: stays first
    assert [row[0] for row in book.queue()] == [1, 2, 3]
    book.modify(1, 100, 9)  # larger: to the back
    assert [row[0] for row in book.queue()] == [2, 3, 1]
    book.modify(2, 99, 5)  # new price: back of the new level
    book.add(4, BID, 99, 1)
    assert [row[0] for row in book.queue()] == [3, 1, 2, 4]
    assert book.levels(BID) == [(100, 14, 2), (99, 6, 2)]


def test_removing_orders_drops_empty_levels_and_recycles_slots() -> None:
    book = Book()
    for order_id in range(1, 40):
        book.add(order_id, ASK, 200 + order_id % 5, 1, pool=order_id % POOLS)
    for order_id in range(1, 40, 2):
        book.remove(order_id)
    assert sum(count for _, _, count in book.levels(ASK)) == 19
    assert int(book.s.book_orders[0]) == 19
    assert int(book.s.pool_n[0] + book.s.pool_n[1]) == 19
    for order_id in range(2, 40, 2):
        book.remove(order_id)
    assert book.levels(ASK) == [] and mt.best_price(book.s, 0, ASK) == mt.NO_PRICE
    book.add(100, ASK, 300, 3)
    assert book.levels(ASK) == [(300, 3, 1)]


def test_reduce_keeps_the_place_in_the_queue() -> None:
    book = Book()
    book.add(1, ASK, 50, 5)
    book.add(2, ASK, 50, 5)
    mt.reduce_order(book.s, book.slots[1], 2)
    assert book.queue() == [(1, ASK, 50, 2), (2, ASK, 50, 5)]
    assert book.levels(ASK) == [(50, 7, 2)]
    with pytest.raises(ValueError, match="shrink"):
        mt.reduce_order(book.s, book.slots[1], 3)


def test_pool_draws_cover_every_order_of_the_pool() -> None:
    book = Book()
    for order_id in range(1, 11):
        book.add(order_id, BID, 100 - order_id, 1, pool=order_id % 2)
    drawn = {
        int(book.s.orders[mt.pool_order(book.s, 0, POOLS, 1, k / 100), mt.O_ID]) for k in range(100)
    }
    assert drawn == {1, 3, 5, 7, 9}


@pytest.mark.parametrize(
    ("side", "price"), [(BID, 105), (BID, 106), (ASK, 104), (ASK, 103), (BID, 0)]
)
def test_orders_that_would_cross_or_lock_the_book_are_refused(side: int, price: int) -> None:
    book = Book()
    book.add(1, BID, 104, 1)
    book.add(2, ASK, 105, 1)
    with pytest.raises(ValueError, match="passive"):
        book.add(3, side, price, 1)
    with pytest.raises(ValueError, match="passive"):
        book.modify(1 if side == BID else 2, price, 1)


def test_books_are_independent() -> None:
    book = Book(books=2)
    book.add(1, BID, 100, 1, b=0)
    book.add(1, ASK, 100, 2, b=1)  # the same id and price, on the other book
    assert book.levels(BID, 0) == [(100, 1, 1)] and book.levels(ASK, 0) == []
    assert book.levels(ASK, 1) == [(100, 2, 1)] and book.levels(BID, 1) == []


def test_arrays_grow_on_demand() -> None:
    book = Book()
    for order_id in range(1, 2_000):
        if order_id % 2:
            book.add(order_id, BID, 10_000 - order_id, 1)
        else:
            book.add(order_id, ASK, 20_000 + order_id, 1)
    assert len(book.levels(BID)) == 1_000 and len(book.levels(ASK)) == 999
    assert book.s.orders.shape[0] >= 2_000 and book.s.lad_key.shape[1] >= 1_000
