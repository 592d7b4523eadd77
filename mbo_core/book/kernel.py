# numba compiles this module with its own type inference: `int` here means int64, and numpy
# scalars and Python ints are the same thing to it, which mypy cannot know.
# mypy: disable-error-code="arg-type, assignment, return-value, no-any-return"
"""Compiled core of the book engine: every book of a stream in flat arrays, driven by numba.

Pure computation, no I/O and no allocation: when a pool is full the kernel stops and says which
one, `engine.py` grows it and calls again. Use `engine.BookEngine`, not this module.

Layout (a slot is a row index into a pool):

* books[b]: per (instrument_id, publisher_id) pair, found through an open-addressing table;
  the row holds ids, the last event's ts/sequence and the data-quality counters.
* orders[o]: id, book, side, price, size, level and the prev/next links of an intrusive FIFO
  queue per level (that queue is queue priority); found through an open-addressing index keyed
  by (book, order_id).
* levels[lv]: price, total size, order count, queue head and tail.
* ladders: per (book, side) a sorted row of keys (price for bids, -price for asks), so both sides
  ascend with the best level last: top-N reads the last N entries (O(N)), and inserts and deletes,
  which cluster near the touch, shift few entries.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

# Record flags (databento_dbn / DBN spec).
F_LAST = 128
F_TOB = 64
F_SNAPSHOT = 32
F_MBP = 16
F_BAD_TS_RECV = 8
F_MAYBE_BAD_BOOK = 4

UNDEF_PRICE = int(np.iinfo(np.int64).max)

ACTION_ADD = ord("A")
ACTION_CANCEL = ord("C")
ACTION_MODIFY = ord("M")
ACTION_CLEAR = ord("R")
ACTION_TRADE = ord("T")
ACTION_FILL = ord("F")
ACTION_NONE = ord("N")
SIDE_ASK = ord("A")
SIDE_BID = ord("B")

BID = 0
ASK = 1
EMPTY = -1

# orders columns
O_ID, O_BOOK, O_SIDE, O_PRICE, O_SIZE, O_LEVEL, O_PREV, O_NEXT = range(8)
ORDER_COLUMNS = 8
# levels columns
L_PRICE, L_SIZE, L_COUNT, L_HEAD, L_TAIL = range(5)
LEVEL_COLUMNS = 5
# books columns; the data-quality counters follow from B_QUALITY on.
B_INSTRUMENT, B_PUBLISHER, B_TS_EVENT, B_TS_RECV, B_SEQUENCE, B_OPEN, B_EVENTS, B_ORDERS = range(8)
B_QUALITY = 8
# Data-quality counters, in this order (engine.QUALITY_FIELDS names them; append only).
Q_CANCEL_UNKNOWN = 0  # Cancel of an order not in the book: changes nothing.
Q_MODIFY_UNKNOWN = 1  # Modify of an order not in the book: treated as an Add.
Q_CANCEL_EXCEEDS = 2  # Cancel of more than the resting size: the order leaves the book.
Q_MAYBE_BAD_BOOK = 3  # Records flagged F_MAYBE_BAD_BOOK.
Q_ADD_EXISTING = 4  # Add of an order id already resting: the old order is replaced.
Q_MODIFY_SIDE = 5  # Modify that moves an order to the other side.
Q_INVALID = 6  # Add/Cancel/Modify with side 'N', or an unknown action: not applied.
Q_UNTERMINATED = 7  # Records of an event never closed by F_LAST (stream cut): not applied.
N_QUALITY = 8
# The best levels last published for the book (price, size, count per side; price UNDEF_PRICE
# for an empty side) and the event-time bucket of its last snapshot: kept here so that what is
# published depends only on the input, also after a rebuild.
B_BBO = B_QUALITY + N_QUALITY
B_SNAPSHOT_BUCKET = B_BBO + 6
# 1 when another book has the same instrument (another publisher): its snapshots then come with
# the consolidated book, which the caller computes, so apply_batch stops for them.
B_SHARED = B_SNAPSHOT_BUCKET + 1
BOOK_COLUMNS = B_SHARED + 1
# A tap row: what apply_batch records for each event that changed a book's best levels.
T_RECORD, T_BOOK, T_TS_EVENT, T_TS_RECV, T_SEQUENCE = range(5)
T_BBO = 5  # bid price, size, count, ask price, size, count
T_QUALITY = T_BBO + 6
TAP_COLUMNS = T_QUALITY + N_QUALITY
# A snapshot row (snapshot_row): the book's ids, last event, the index of the record it follows
# and what kind of snapshot it is (the wire's EXT_* flags, written by whoever fills the row),
# counters, then its best levels.
S_PUBLISHER, S_TS_EVENT, S_TS_RECV, S_SEQUENCE, S_RECORD, S_FLAGS = range(6)
S_QUALITY = 6
S_LEVELS = S_QUALITY + N_QUALITY  # bids (price, size, count) x depth, then asks x depth
# meta scalars
M_BOOKS, M_ORDER_FREE, M_ORDERS_USED, M_LEVEL_FREE = range(4)

# What apply_batch stopped for.
DONE = 0
EVENT = 1
NEED_BOOKS = 2
NEED_ORDERS = 3
NEED_LEVELS = 4
NEED_LADDER = 5

_HASH_MULT = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15: Fibonacci hashing
_BOOK_MULT = np.int64(-4658895280553007687)  # 0xBF58476D1CE4E5B9


class KernelState(NamedTuple):
    meta: np.ndarray  # int64[4]
    books: np.ndarray  # int64[B, BOOK_COLUMNS]
    book_table: np.ndarray  # int64[4B]
    orders: np.ndarray  # int64[O, ORDER_COLUMNS]
    order_table: np.ndarray  # int64[2O]
    levels: np.ndarray  # int64[L, LEVEL_COLUMNS]
    lad_key: np.ndarray  # int64[2B, W]
    lad_lvl: np.ndarray  # int64[2B, W]
    lad_n: np.ndarray  # int64[2B]


# ------------------------------------------------------------------------- hashing


@njit(cache=True, inline="always")
def _order_home(order_id: int, book: int, mask: int) -> int:
    h = order_id * _HASH_MULT + book * _BOOK_MULT
    return (h ^ (h >> 29)) & mask


@njit(cache=True, inline="always")
def _book_home(instrument_id: int, publisher_id: int, mask: int) -> int:
    h = (instrument_id * 65536 + publisher_id) * _HASH_MULT
    return (h ^ (h >> 31)) & mask


@njit(cache=True)
def find_book(s: KernelState, instrument_id: int, publisher_id: int) -> int:
    table = s.book_table
    mask = table.size - 1
    i = _book_home(instrument_id, publisher_id, mask)
    while True:
        b = table[i]
        if b == EMPTY:
            return EMPTY
        if s.books[b, B_INSTRUMENT] == instrument_id and s.books[b, B_PUBLISHER] == publisher_id:
            return b
        i = (i + 1) & mask


@njit(cache=True)
def index_book(s: KernelState, b: int) -> None:
    table = s.book_table
    mask = table.size - 1
    i = _book_home(s.books[b, B_INSTRUMENT], s.books[b, B_PUBLISHER], mask)
    while table[i] != EMPTY:
        i = (i + 1) & mask
    table[i] = b


@njit(cache=True)
def init_book(s: KernelState, b: int, instrument_id: int, publisher_id: int) -> None:
    books = s.books
    books[b, :] = 0
    books[b, B_INSTRUMENT] = instrument_id
    books[b, B_PUBLISHER] = publisher_id
    books[b, B_BBO] = UNDEF_PRICE
    books[b, B_BBO + 3] = UNDEF_PRICE
    books[b, B_SNAPSHOT_BUCKET] = -1
    for other in range(b):
        if books[other, B_INSTRUMENT] == instrument_id:
            books[other, B_SHARED] = 1
            books[b, B_SHARED] = 1
    index_book(s, b)


@njit(cache=True)
def find_order(s: KernelState, b: int, order_id: int) -> int:
    table = s.order_table
    orders = s.orders
    mask = table.size - 1
    i = _order_home(order_id, b, mask)
    while True:
        o = table[i]
        if o == EMPTY:
            return EMPTY
        if orders[o, O_ID] == order_id and orders[o, O_BOOK] == b:
            return o
        i = (i + 1) & mask


@njit(cache=True)
def index_order(s: KernelState, o: int) -> None:
    table = s.order_table
    mask = table.size - 1
    i = _order_home(s.orders[o, O_ID], s.orders[o, O_BOOK], mask)
    while table[i] != EMPTY:
        i = (i + 1) & mask
    table[i] = o


@njit(cache=True)
def _unindex_order(s: KernelState, o: int) -> None:
    # Linear probing with backward-shift deletion: no tombstones, so probes stay short.
    table = s.order_table
    orders = s.orders
    mask = table.size - 1
    i = _order_home(orders[o, O_ID], orders[o, O_BOOK], mask)
    while table[i] != o:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        other = table[j]
        if other == EMPTY:
            break
        home = _order_home(orders[other, O_ID], orders[other, O_BOOK], mask)
        # `other` may move back into the hole at i unless its home lies cyclically in (i, j].
        if (i < j and (home <= i or home > j)) or (j < i and home <= i and home > j):
            table[i] = other
            i = j
    table[i] = EMPTY


@njit(cache=True)
def rebuild_order_table(s: KernelState) -> None:
    s.order_table[:] = EMPTY
    levels = s.levels
    for row in range(s.meta[M_BOOKS] * 2):
        for k in range(s.lad_n[row]):
            o = levels[s.lad_lvl[row, k], L_HEAD]
            while o != EMPTY:
                index_order(s, o)
                o = s.orders[o, O_NEXT]


@njit(cache=True)
def rebuild_book_table(s: KernelState) -> None:
    s.book_table[:] = EMPTY
    for b in range(s.meta[M_BOOKS]):
        index_book(s, b)


# ------------------------------------------------------------------------ pools


@njit(cache=True)
def _alloc_order(s: KernelState, b: int, order_id: int) -> int:
    meta = s.meta
    o = meta[M_ORDER_FREE]
    if o != EMPTY:
        meta[M_ORDER_FREE] = s.orders[o, O_NEXT]
    else:
        o = meta[M_ORDERS_USED]
        meta[M_ORDERS_USED] = o + 1
    s.orders[o, O_ID] = order_id
    s.orders[o, O_BOOK] = b
    index_order(s, o)
    return o


@njit(cache=True)
def _release_order(s: KernelState, o: int) -> None:
    _unindex_order(s, o)
    s.orders[o, O_NEXT] = s.meta[M_ORDER_FREE]
    s.meta[M_ORDER_FREE] = o


@njit(cache=True)
def _ladder_find(s: KernelState, row: int, key: int) -> int:
    """Index of the first entry >= key in the row."""
    keys = s.lad_key[row]
    lo = 0
    hi = s.lad_n[row]
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _level_for(s: KernelState, b: int, side: int, price: int) -> int:
    """The level at that price and side, created when missing (the caller ensured room)."""
    row = b * 2 + side
    key = price if side == BID else -price
    n = s.lad_n[row]
    keys = s.lad_key[row]
    lvls = s.lad_lvl[row]
    # Most activity is at the touch, the end of the row.
    if n > 0 and keys[n - 1] == key:
        return lvls[n - 1]
    pos = _ladder_find(s, row, key)
    if pos < n and keys[pos] == key:
        return lvls[pos]
    levels = s.levels
    lv = s.meta[M_LEVEL_FREE]
    s.meta[M_LEVEL_FREE] = levels[lv, L_HEAD]
    levels[lv, L_PRICE] = price
    levels[lv, L_SIZE] = 0
    levels[lv, L_COUNT] = 0
    levels[lv, L_HEAD] = EMPTY
    levels[lv, L_TAIL] = EMPTY
    for k in range(n, pos, -1):
        keys[k] = keys[k - 1]
        lvls[k] = lvls[k - 1]
    keys[pos] = key
    lvls[pos] = lv
    s.lad_n[row] = n + 1
    return lv


@njit(cache=True)
def _free_level(s: KernelState, lv: int) -> None:
    s.levels[lv, L_HEAD] = s.meta[M_LEVEL_FREE]
    s.meta[M_LEVEL_FREE] = lv


@njit(cache=True)
def _remove_level(s: KernelState, b: int, side: int, lv: int) -> None:
    row = b * 2 + side
    price = s.levels[lv, L_PRICE]
    key = price if side == BID else -price
    n = s.lad_n[row]
    keys = s.lad_key[row]
    lvls = s.lad_lvl[row]
    pos = n - 1 if keys[n - 1] == key else _ladder_find(s, row, key)
    for k in range(pos, n - 1):
        keys[k] = keys[k + 1]
        lvls[k] = lvls[k + 1]
    s.lad_n[row] = n - 1
    _free_level(s, lv)


# ------------------------------------------------------------------------ queues


@njit(cache=True)
def _enqueue(s: KernelState, b: int, side: int, o: int, price: int, size: int) -> None:
    """Put order o at the back of its price level: last in that queue."""
    lv = _level_for(s, b, side, price)
    orders = s.orders
    levels = s.levels
    orders[o, O_SIDE] = side
    orders[o, O_PRICE] = price
    orders[o, O_SIZE] = size
    orders[o, O_LEVEL] = lv
    tail = levels[lv, L_TAIL]
    orders[o, O_PREV] = tail
    orders[o, O_NEXT] = EMPTY
    if tail == EMPTY:
        levels[lv, L_HEAD] = o
    else:
        orders[tail, O_NEXT] = o
    levels[lv, L_TAIL] = o
    levels[lv, L_SIZE] += size
    levels[lv, L_COUNT] += 1
    s.books[b, B_ORDERS] += 1


@njit(cache=True)
def _dequeue(s: KernelState, b: int, o: int) -> None:
    """Take order o out of its level's queue; drop the level when it empties."""
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
    s.books[b, B_ORDERS] -= 1
    if levels[lv, L_COUNT] == 0:
        _remove_level(s, b, orders[o, O_SIDE], lv)


@njit(cache=True)
def _clear_side(s: KernelState, b: int, side: int) -> None:
    row = b * 2 + side
    levels = s.levels
    for k in range(s.lad_n[row]):
        lv = s.lad_lvl[row, k]
        o = levels[lv, L_HEAD]
        while o != EMPTY:
            nxt = s.orders[o, O_NEXT]
            _release_order(s, o)
            s.books[b, B_ORDERS] -= 1
            o = nxt
        _free_level(s, lv)
    s.lad_n[row] = 0


# ----------------------------------------------------------------------- actions


@njit(cache=True)
def _add(s: KernelState, b: int, side: int, price: int, size: int, order_id: int) -> None:
    o = find_order(s, b, order_id)
    if o != EMPTY:
        s.books[b, B_QUALITY + Q_ADD_EXISTING] += 1
        _dequeue(s, b, o)
    else:
        o = _alloc_order(s, b, order_id)
    _enqueue(s, b, side, o, price, size)


@njit(cache=True)
def _cancel(s: KernelState, b: int, size: int, order_id: int) -> None:
    o = find_order(s, b, order_id)
    if o == EMPTY:
        s.books[b, B_QUALITY + Q_CANCEL_UNKNOWN] += 1
        return
    resting = s.orders[o, O_SIZE]
    if size > resting:
        s.books[b, B_QUALITY + Q_CANCEL_EXCEEDS] += 1
        size = resting
    if size == resting:
        _dequeue(s, b, o)
        _release_order(s, o)
    else:
        s.orders[o, O_SIZE] = resting - size
        s.levels[s.orders[o, O_LEVEL], L_SIZE] -= size


@njit(cache=True)
def _modify(s: KernelState, b: int, side: int, price: int, size: int, order_id: int) -> None:
    o = find_order(s, b, order_id)
    if o == EMPTY:
        s.books[b, B_QUALITY + Q_MODIFY_UNKNOWN] += 1
        _enqueue(s, b, side, _alloc_order(s, b, order_id), price, size)
        return
    orders = s.orders
    if orders[o, O_SIDE] != side:
        s.books[b, B_QUALITY + Q_MODIFY_SIDE] += 1
        _dequeue(s, b, o)
        _enqueue(s, b, side, o, price, size)
    elif orders[o, O_PRICE] != price or size > orders[o, O_SIZE]:
        # A new price, or more size, loses queue priority: back of the (new) level.
        _dequeue(s, b, o)
        _enqueue(s, b, side, o, price, size)
    else:
        # Less (or the same) size at the same price keeps its place in the queue.
        s.levels[orders[o, O_LEVEL], L_SIZE] += size - orders[o, O_SIZE]
        orders[o, O_SIZE] = size


@njit(cache=True)
def _top_of_book(s: KernelState, b: int, side: int, price: int, size: int) -> None:
    _clear_side(s, b, side)
    if price != UNDEF_PRICE:
        # A top-of-book record is a whole level, not an order: one level, count 1, no queue.
        lv = _level_for(s, b, side, price)
        s.levels[lv, L_SIZE] = size
        s.levels[lv, L_COUNT] = 1


@njit(cache=True)
def clear_book(s: KernelState, b: int) -> None:
    _clear_side(s, b, BID)
    _clear_side(s, b, ASK)


@njit(cache=True)
def apply_record(
    s: KernelState, b: int, action: int, side: int, price: int, size: int, order_id: int, flags: int
) -> None:
    if flags & F_MAYBE_BAD_BOOK:
        s.books[b, B_QUALITY + Q_MAYBE_BAD_BOOK] += 1
    # Plain comparisons: what numba compiles best in this, the hottest branch.
    if action == ACTION_TRADE or action == ACTION_FILL or action == ACTION_NONE:  # noqa: PLR1714, SIM109
        return
    if action == ACTION_CLEAR:
        clear_book(s, b)
        return
    if side == SIDE_BID:
        sd = BID
    elif side == SIDE_ASK:
        sd = ASK
    else:
        s.books[b, B_QUALITY + Q_INVALID] += 1
        return
    if action == ACTION_ADD:
        if flags & F_TOB:
            _top_of_book(s, b, sd, price, size)
        else:
            _add(s, b, sd, price, size, order_id)
    elif action == ACTION_CANCEL:
        _cancel(s, b, size, order_id)
    elif action == ACTION_MODIFY:
        _modify(s, b, sd, price, size, order_id)
    else:
        s.books[b, B_QUALITY + Q_INVALID] += 1


@njit(cache=True)
def _room_for_record(s: KernelState, b: int, side: int) -> int:
    """DONE when one more record fits whatever it does, else which pool must grow first."""
    meta = s.meta
    if meta[M_ORDER_FREE] == EMPTY and meta[M_ORDERS_USED] == s.orders.shape[0]:
        return NEED_ORDERS
    if meta[M_LEVEL_FREE] == EMPTY:
        return NEED_LEVELS
    width = s.lad_key.shape[1]
    if side == SIDE_BID and s.lad_n[b * 2 + BID] == width:
        return NEED_LADDER
    if side == SIDE_ASK and s.lad_n[b * 2 + ASK] == width:
        return NEED_LADDER
    return DONE


# nogil: engines of disjoint books may apply in threads at once (mbo book splits by instrument).
@njit(cache=True, nogil=True)
def apply_batch(
    s: KernelState,
    records: np.ndarray,
    start: int,
    stop: int,
    stop_after_event: bool,
    snapshot_interval_ns: int,
    taps: np.ndarray,
    out: np.ndarray,
    snaps: np.ndarray,
    snap_depth: int,
) -> int:
    """Apply records[start:stop] (a DBN MBO structured array) in order.

    Returns a status (DONE, EVENT, NEED_*) and writes into out[0] the index of the next record to
    apply and into out[1] the book of the last record applied. It returns EVENT right after a
    record flagged F_LAST when stop_after_event is set, or when that event is the book's first in
    a new snapshot_interval_ns bucket of ts_event (out[3] = 1 then; interval <= 0: never), so the
    caller can observe that book. When taps has rows, each event that changes its book's best
    levels appends a tap row (TAP_COLUMNS) at taps[out[2]] and increments out[2]; the caller
    leaves out[2] alone between calls on one batch and makes taps as long as the batch.
    When snaps has rows, a snapshot due for a book of its own instrument alone (not B_SHARED) is
    written here instead of stopping: snapshot_row at snaps[out[4]] (depth snap_depth, S_RECORD
    the F_LAST record's index, S_FLAGS 0), then out[4] += 1; it stops as before once snaps is
    full. The caller leaves out[4] alone between calls on one batch.
    """
    meta = s.meta
    books = s.books
    # Consecutive records nearly always belong to the same book: skip the table lookup then.
    last_instrument = np.int64(-1)
    last_publisher = np.int64(-1)
    b = np.int64(EMPTY)
    i = start
    while i < stop:
        rec = records[i]
        instrument_id = np.int64(rec["instrument_id"])
        publisher_id = np.int64(rec["publisher_id"])
        if instrument_id != last_instrument or publisher_id != last_publisher:
            b = find_book(s, instrument_id, publisher_id)
            last_instrument = instrument_id
            last_publisher = publisher_id
        if b == EMPTY:
            if meta[M_BOOKS] == books.shape[0]:
                out[0] = i
                return NEED_BOOKS
            b = meta[M_BOOKS]
            meta[M_BOOKS] = b + 1
            init_book(s, b, instrument_id, publisher_id)
        side = np.int64(rec["side"])
        need = _room_for_record(s, b, side)
        if need != DONE:
            out[0] = i
            return need
        flags = np.int64(rec["flags"])
        apply_record(
            s,
            b,
            np.int64(rec["action"]),
            side,
            np.int64(rec["price"]),
            np.int64(rec["size"]),
            np.int64(rec["order_id"]),
            flags,
        )
        i += 1
        out[1] = b
        if flags & F_LAST:
            ts_event = np.int64(rec["ts_event"])
            books[b, B_OPEN] = 0
            books[b, B_EVENTS] += 1
            books[b, B_TS_EVENT] = ts_event
            books[b, B_TS_RECV] = np.int64(rec["ts_recv"])
            books[b, B_SEQUENCE] = np.int64(rec["sequence"])
            if taps.shape[0] > 0 and _bbo_changed(s, b):
                _tap(s, b, i - 1, taps, out)
            snapshot_due = False
            if snapshot_interval_ns > 0:
                bucket = ts_event // snapshot_interval_ns
                if bucket != books[b, B_SNAPSHOT_BUCKET]:
                    books[b, B_SNAPSHOT_BUCKET] = bucket
                    snapshot_due = True
            if (
                snapshot_due
                and not stop_after_event
                and books[b, B_SHARED] == 0
                and out[4] < snaps.shape[0]
            ):
                row = snaps[out[4]]
                snapshot_row(s, b, snap_depth, row)
                row[S_RECORD] = i - 1
                row[S_FLAGS] = 0
                out[4] += 1
                snapshot_due = False
            if stop_after_event or snapshot_due:
                out[0] = i
                out[3] = 1 if snapshot_due else 0
                return EVENT
        else:
            books[b, B_OPEN] += 1
    out[0] = i
    return DONE


@njit(cache=True)
def _bbo_changed(s: KernelState, b: int) -> bool:
    """Whether the book's best levels differ from the last published ones; updates those."""
    books = s.books
    levels = s.levels
    changed = False
    for side in range(2):
        row = b * 2 + side
        n = s.lad_n[row]
        col = B_BBO + 3 * side
        if n == 0:
            price, size, count = UNDEF_PRICE, 0, 0
        else:
            lv = s.lad_lvl[row, n - 1]
            price, size, count = levels[lv, L_PRICE], levels[lv, L_SIZE], levels[lv, L_COUNT]
        if books[b, col] != price or books[b, col + 1] != size or books[b, col + 2] != count:
            books[b, col] = price
            books[b, col + 1] = size
            books[b, col + 2] = count
            changed = True
    return changed


@njit(cache=True)
def _tap(s: KernelState, b: int, record: int, taps: np.ndarray, out: np.ndarray) -> None:
    books = s.books
    t = out[2]
    taps[t, T_RECORD] = record
    taps[t, T_BOOK] = b
    taps[t, T_TS_EVENT] = books[b, B_TS_EVENT]
    taps[t, T_TS_RECV] = books[b, B_TS_RECV]
    taps[t, T_SEQUENCE] = books[b, B_SEQUENCE]
    for k in range(6):
        taps[t, T_BBO + k] = books[b, B_BBO + k]
    for k in range(N_QUALITY):
        taps[t, T_QUALITY + k] = books[b, B_QUALITY + k]
    out[2] = t + 1


# ------------------------------------------------------------------------- views


@njit(cache=True)
def top_levels(
    levels: np.ndarray,
    lad_lvl: np.ndarray,
    lad_n: np.ndarray,
    b: int,
    side: int,
    depth: int,
    out: np.ndarray,
) -> int:
    """Fill out[i] = (price, size, count), best first; returns the level count (depth<=0: all)."""
    row = b * 2 + side
    n = lad_n[row]
    m = n if depth <= 0 or depth > n else depth
    for i in range(m):
        lv = lad_lvl[row, n - 1 - i]
        out[i, 0] = levels[lv, L_PRICE]
        out[i, 1] = levels[lv, L_SIZE]
        out[i, 2] = levels[lv, L_COUNT]
    return m


@njit(cache=True)
def top_both_sides(
    levels: np.ndarray,
    lad_lvl: np.ndarray,
    lad_n: np.ndarray,
    b: int,
    n_bids: int,
    n_asks: int,
    out: np.ndarray,
) -> None:
    """out[:n_bids] = best bids, out[n_bids:n_bids + n_asks] = best asks, as top_levels."""
    top_levels(levels, lad_lvl, lad_n, b, BID, n_bids, out)
    top_levels(levels, lad_lvl, lad_n, b, ASK, n_asks, out[n_bids:])


@njit(cache=True)
def snapshot_row(s: KernelState, b: int, depth: int, out: np.ndarray) -> None:
    """Write book b into out (S_* layout, S_LEVELS + 6 * depth long): best `depth` levels per
    side best first, price UNDEF_PRICE and size, count 0 past a side's last level."""
    books = s.books
    out[S_PUBLISHER] = books[b, B_PUBLISHER]
    out[S_TS_EVENT] = books[b, B_TS_EVENT]
    out[S_TS_RECV] = books[b, B_TS_RECV]
    out[S_SEQUENCE] = books[b, B_SEQUENCE]
    for q in range(N_QUALITY):
        out[S_QUALITY + q] = books[b, B_QUALITY + q]
    for side in range(2):
        row = b * 2 + side
        n = s.lad_n[row]
        base = S_LEVELS + side * 3 * depth
        for i in range(depth):
            at = base + 3 * i
            if i < n:
                lv = s.lad_lvl[row, n - 1 - i]
                out[at] = s.levels[lv, L_PRICE]
                out[at + 1] = s.levels[lv, L_SIZE]
                out[at + 2] = s.levels[lv, L_COUNT]
            else:
                out[at] = UNDEF_PRICE
                out[at + 1] = 0
                out[at + 2] = 0


@njit(cache=True)
def queue_at(s: KernelState, b: int, side: int, price: int, out: np.ndarray) -> int:
    """out[i] = (order_id, size) resting at that price, front of the queue first; the count."""
    row = b * 2 + side
    key = price if side == BID else -price
    pos = _ladder_find(s, row, key)
    if pos >= s.lad_n[row] or s.lad_key[row, pos] != key:
        return 0
    o = s.levels[s.lad_lvl[row, pos], L_HEAD]
    n = 0
    while o != EMPTY and n < out.shape[0]:
        out[n, 0] = s.orders[o, O_ID]
        out[n, 1] = s.orders[o, O_SIZE]
        n += 1
        o = s.orders[o, O_NEXT]
    return n


@njit(cache=True)
def count_unterminated(s: KernelState, books_of: np.ndarray) -> None:
    for b in books_of:
        s.books[b, B_QUALITY + Q_UNTERMINATED] += 1
