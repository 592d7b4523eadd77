"""The generator's true order books: price-time priority, FIFO per level, compiled with numba.

This is the generator's own implementation of the book rules (shared/docs/book-rules.md),
written independently of mbo_core's engine: the generator decides every order against these
books, so it knows the correct book at every event, and the agreement tests replay the generated
file through `mbo_core.book.BookEngine` and require the two to match exactly.

All books of a simulation live in one set of flat arrays (numba cannot cache classes):

* orders[o]: a resting order: id, side, price, size, the order-flow pool it belongs to and its
  index there, its level, and prev/next links of its level's FIFO queue (front = head).
* levels[lv]: price, total size, order count, queue head and tail.
* ladders, one row per (book, side): the side's levels sorted by key (price for bids, -price for
  asks), so both sides have their best level last; touch changes shift few entries.
* pools, one row per (book, pool): the order slots of that pool in no particular order, so the
  flow model can draw a uniformly random order in O(1) (swap-remove on the way out).

A function that needs room never allocates: `room_for_event` tells the caller which array to grow
first (`BookArrays.grow`), the same contract as a pool allocator. Slots are recycled through free
lists threaded through the O_NEXT / L_HEAD columns.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

BID = 0
ASK = 1
#: DBN side bytes by side index.
SIDE_BYTE_BID = ord("B")
SIDE_BYTE_ASK = ord("A")
EMPTY = -1
#: best_price() of an empty side (real prices are positive).
NO_PRICE = -1

O_ID, O_SIDE, O_PRICE, O_SIZE, O_POOL, O_POOL_INDEX, O_LEVEL, O_PREV, O_NEXT = range(9)
ORDER_COLUMNS = 9
L_PRICE, L_SIZE, L_COUNT, L_HEAD, L_TAIL = range(5)
LEVEL_COLUMNS = 5
M_ORDER_FREE, M_ORDERS_USED, M_LEVEL_FREE, M_LEVELS_USED = range(4)

# What room_for_event asks the caller to grow.
ROOM_OK = 0
NEED_ORDERS = 1
NEED_LEVELS = 2
NEED_LADDER = 3
NEED_POOL = 4


class BookArrays(NamedTuple):
    meta: np.ndarray  # int64[4]
    orders: np.ndarray  # int64[O, ORDER_COLUMNS]
    levels: np.ndarray  # int64[L, LEVEL_COLUMNS]
    lad_key: np.ndarray  # int64[2B, W]
    lad_lvl: np.ndarray  # int64[2B, W]
    lad_n: np.ndarray  # int64[2B]
    pool_slot: np.ndarray  # int64[pools * B, P]
    pool_n: np.ndarray  # int64[pools * B]
    book_orders: np.ndarray  # int64[B]: resting orders per book

    @classmethod
    def allocate(cls, books: int, pools: int, orders_per_book: int = 512) -> BookArrays:
        order_capacity = books * orders_per_book
        level_capacity = max(64, order_capacity // 2)
        return cls(
            meta=np.array([EMPTY, 0, EMPTY, 0], dtype=np.int64),
            orders=np.zeros((order_capacity, ORDER_COLUMNS), dtype=np.int64),
            levels=np.zeros((level_capacity, LEVEL_COLUMNS), dtype=np.int64),
            lad_key=np.zeros((2 * books, 256), dtype=np.int64),
            lad_lvl=np.zeros((2 * books, 256), dtype=np.int64),
            lad_n=np.zeros(2 * books, dtype=np.int64),
            pool_slot=np.zeros((pools * books, 256), dtype=np.int64),
            pool_n=np.zeros(pools * books, dtype=np.int64),
            book_orders=np.zeros(books, dtype=np.int64),
        )

    def grow(self, need: int) -> BookArrays:
        """A copy with the array `need` (a NEED_* status) doubled; slots keep their numbers."""
        if need == NEED_ORDERS:
            return self._replace(orders=_grow_rows(self.orders))
        if need == NEED_LEVELS:
            return self._replace(levels=_grow_rows(self.levels))
        if need == NEED_LADDER:
            return self._replace(
                lad_key=_grow_columns(self.lad_key), lad_lvl=_grow_columns(self.lad_lvl)
            )
        if need == NEED_POOL:
            return self._replace(pool_slot=_grow_columns(self.pool_slot))
        raise ValueError(f"nothing to grow for status {need}")


def _grow_rows(a: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] * 2, *a.shape[1:]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def _grow_columns(a: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0], a.shape[1] * 2), dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


# ------------------------------------------------------------------------ room


@njit(cache=True)
def room_for_event(s: BookArrays, b: int, pools: int) -> int:
    """ROOM_OK when any one event of book b fits, else what to grow first. An event adds at
    most one order and one level per side (a trade's rest, an add), never more."""
    meta = s.meta
    if meta[M_ORDER_FREE] == EMPTY and meta[M_ORDERS_USED] >= s.orders.shape[0] - 1:
        return NEED_ORDERS
    if meta[M_LEVEL_FREE] == EMPTY and meta[M_LEVELS_USED] >= s.levels.shape[0] - 1:
        return NEED_LEVELS
    width = s.lad_key.shape[1]
    if s.lad_n[2 * b] >= width - 1 or s.lad_n[2 * b + 1] >= width - 1:
        return NEED_LADDER
    for p in range(pools):
        if s.pool_n[pools * b + p] >= s.pool_slot.shape[1] - 1:
            return NEED_POOL
    return ROOM_OK


# ---------------------------------------------------------------------- reading


@njit(cache=True)
def best_price(s: BookArrays, b: int, side: int) -> int:
    """Best price of a side of book b, NO_PRICE when the side is empty."""
    row = 2 * b + side
    n = s.lad_n[row]
    if n == 0:
        return NO_PRICE
    return int(s.levels[s.lad_lvl[row, n - 1], L_PRICE])


@njit(cache=True)
def pool_order(s: BookArrays, b: int, pools: int, pool: int, fraction: float) -> int:
    """The slot of a resting order of a pool chosen by a uniform number in [0, 1)."""
    row = pools * b + pool
    return int(s.pool_slot[row, int(fraction * s.pool_n[row])])


@njit(cache=True)
def side_levels(s: BookArrays, b: int, side: int, depth: int, out: np.ndarray) -> int:
    """out[k] = (price, size, count) of the side's levels, best first; returns how many (depth
    <= 0: all)."""
    row = 2 * b + side
    n = s.lad_n[row]
    m = n if depth <= 0 or depth > n else depth
    for k in range(m):
        lv = s.lad_lvl[row, n - 1 - k]
        out[k, 0] = s.levels[lv, L_PRICE]
        out[k, 1] = s.levels[lv, L_SIZE]
        out[k, 2] = s.levels[lv, L_COUNT]
    return m


@njit(cache=True)
def book_queue(s: BookArrays, b: int, out: np.ndarray) -> int:
    """out[k] = (order_id, side, price, size) of every order of book b: bids best level first,
    then asks best first, each level front of its queue first (a snapshot's order); the count."""
    k = 0
    for side in range(2):
        row = 2 * b + side
        n = s.lad_n[row]
        for j in range(n - 1, -1, -1):
            o = s.levels[s.lad_lvl[row, j], L_HEAD]
            while o != EMPTY:
                out[k, 0] = s.orders[o, O_ID]
                out[k, 1] = side
                out[k, 2] = s.orders[o, O_PRICE]
                out[k, 3] = s.orders[o, O_SIZE]
                k += 1
                o = s.orders[o, O_NEXT]
    return k


# ------------------------------------------------------------------ ladder


@njit(cache=True, inline="always")
def _key(side: int, price: int) -> int:
    return price if side == BID else -price


@njit(cache=True)
def _ladder_position(s: BookArrays, row: int, key: int) -> int:
    """Index of the first entry >= key."""
    keys = s.lad_key[row]
    lo = 0
    hi = int(s.lad_n[row])
    # The touch and its neighbours, the end of the row, are where most lookups land.
    if hi > 0 and keys[hi - 1] < key:
        return hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _level_at(s: BookArrays, b: int, side: int, price: int) -> int:
    """The level of that price, created (empty) when missing."""
    row = 2 * b + side
    key = _key(side, price)
    pos = _ladder_position(s, row, key)
    n = s.lad_n[row]
    if pos < n and s.lad_key[row, pos] == key:
        return int(s.lad_lvl[row, pos])
    meta = s.meta
    lv = meta[M_LEVEL_FREE]
    if lv != EMPTY:
        meta[M_LEVEL_FREE] = s.levels[lv, L_HEAD]
    else:
        lv = meta[M_LEVELS_USED]
        meta[M_LEVELS_USED] = lv + 1
    levels = s.levels
    levels[lv, L_PRICE] = price
    levels[lv, L_SIZE] = 0
    levels[lv, L_COUNT] = 0
    levels[lv, L_HEAD] = EMPTY
    levels[lv, L_TAIL] = EMPTY
    for k in range(n, pos, -1):
        s.lad_key[row, k] = s.lad_key[row, k - 1]
        s.lad_lvl[row, k] = s.lad_lvl[row, k - 1]
    s.lad_key[row, pos] = key
    s.lad_lvl[row, pos] = lv
    s.lad_n[row] = n + 1
    return int(lv)


@njit(cache=True)
def _drop_level(s: BookArrays, b: int, side: int, lv: int) -> None:
    row = 2 * b + side
    key = _key(side, s.levels[lv, L_PRICE])
    n = s.lad_n[row]
    pos = n - 1 if s.lad_key[row, n - 1] == key else _ladder_position(s, row, key)
    for k in range(pos, n - 1):
        s.lad_key[row, k] = s.lad_key[row, k + 1]
        s.lad_lvl[row, k] = s.lad_lvl[row, k + 1]
    s.lad_n[row] = n - 1
    s.levels[lv, L_HEAD] = s.meta[M_LEVEL_FREE]
    s.meta[M_LEVEL_FREE] = lv


# ------------------------------------------------------------------- queues


@njit(cache=True)
def _enqueue(s: BookArrays, b: int, o: int) -> None:
    """Order o (side, price, size set) to the back of its level's queue."""
    orders = s.orders
    side = orders[o, O_SIDE]
    lv = _level_at(s, b, side, orders[o, O_PRICE])
    levels = s.levels
    tail = levels[lv, L_TAIL]
    orders[o, O_LEVEL] = lv
    orders[o, O_PREV] = tail
    orders[o, O_NEXT] = EMPTY
    if tail == EMPTY:
        levels[lv, L_HEAD] = o
    else:
        orders[tail, O_NEXT] = o
    levels[lv, L_TAIL] = o
    levels[lv, L_SIZE] += orders[o, O_SIZE]
    levels[lv, L_COUNT] += 1


@njit(cache=True)
def _dequeue(s: BookArrays, b: int, o: int) -> None:
    """Order o out of its level's queue; an emptied level leaves the ladder."""
    orders = s.orders
    levels = s.levels
    lv = orders[o, O_LEVEL]
    prev = orders[o, O_PREV]
    nxt = orders[o, O_NEXT]
    if prev == EMPTY:
        levels[lv, L_HEAD] = nxt
    else:
        orders[prev, O_NEXT] = nxt
    if nxt == EMPTY:
        levels[lv, L_TAIL] = prev
    else:
        orders[nxt, O_PREV] = prev
    levels[lv, L_SIZE] -= orders[o, O_SIZE]
    levels[lv, L_COUNT] -= 1
    if levels[lv, L_COUNT] == 0:
        _drop_level(s, b, orders[o, O_SIDE], lv)


# ------------------------------------------------------------------- orders


@njit(cache=True)
def is_passive(s: BookArrays, b: int, side: int, price: int) -> bool:
    """Whether a resting order at that price would leave the book uncrossed and unlocked."""
    if price <= 0:
        return False
    if side == BID:
        ask = best_price(s, b, ASK)
        return ask == NO_PRICE or price < ask
    bid = best_price(s, b, BID)
    return bid == NO_PRICE or price > bid


@njit(cache=True)
def add_order(
    s: BookArrays, b: int, pools: int, order_id: int, side: int, price: int, size: int, pool: int
) -> int:
    """Rest a new order at the back of its level; its slot. The caller checked room and that
    the order is passive (see is_passive); a violation raises."""
    if size <= 0 or not is_passive(s, b, side, price):
        raise ValueError("add_order: not a passive order with a positive size")
    meta = s.meta
    o = meta[M_ORDER_FREE]
    if o != EMPTY:
        meta[M_ORDER_FREE] = s.orders[o, O_NEXT]
    else:
        o = meta[M_ORDERS_USED]
        meta[M_ORDERS_USED] = o + 1
    orders = s.orders
    orders[o, O_ID] = order_id
    orders[o, O_SIDE] = side
    orders[o, O_PRICE] = price
    orders[o, O_SIZE] = size
    row = pools * b + pool
    k = s.pool_n[row]
    s.pool_slot[row, k] = o
    s.pool_n[row] = k + 1
    orders[o, O_POOL] = pool
    orders[o, O_POOL_INDEX] = k
    _enqueue(s, b, o)
    s.book_orders[b] += 1
    return int(o)


@njit(cache=True)
def remove_order(s: BookArrays, b: int, pools: int, o: int) -> None:
    """Order o leaves the book (cancelled or filled in full)."""
    _dequeue(s, b, o)
    orders = s.orders
    row = pools * b + orders[o, O_POOL]
    last = s.pool_n[row] - 1
    k = orders[o, O_POOL_INDEX]
    moved = s.pool_slot[row, last]
    s.pool_slot[row, k] = moved
    orders[moved, O_POOL_INDEX] = k
    s.pool_n[row] = last
    orders[o, O_NEXT] = s.meta[M_ORDER_FREE]
    s.meta[M_ORDER_FREE] = o
    s.book_orders[b] -= 1


@njit(cache=True)
def reduce_order(s: BookArrays, o: int, size: int) -> None:
    """A smaller size (0 < size <= current): the order keeps its place in the queue."""
    if size <= 0 or size > s.orders[o, O_SIZE]:
        raise ValueError("reduce_order: size must shrink and stay positive")
    s.levels[s.orders[o, O_LEVEL], L_SIZE] -= s.orders[o, O_SIZE] - size
    s.orders[o, O_SIZE] = size


@njit(cache=True)
def modify_order(s: BookArrays, b: int, o: int, price: int, size: int) -> None:
    """New price and size, the rules of a Modify: a size decrease at the same price keeps queue
    priority; a new price or a larger size goes to the back of the (new) level."""
    orders = s.orders
    if price == orders[o, O_PRICE] and size <= orders[o, O_SIZE]:
        reduce_order(s, o, size)
        return
    if size <= 0 or not is_passive(s, b, orders[o, O_SIDE], price):
        raise ValueError("modify_order: not a passive price with a positive size")
    _dequeue(s, b, o)
    orders[o, O_PRICE] = price
    orders[o, O_SIZE] = size
    _enqueue(s, b, o)
