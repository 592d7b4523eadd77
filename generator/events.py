"""The compiled event loop: each book's order flow (flow.py) acting on its true book
(matching.py), writing DBN record fields. Called window by window by core.MarketSimulator.

Event shapes (records of one event share ts_event and ts_recv; only the last carries F_LAST):

* Add, Cancel (full or partial), Modify: one record.
* Trade, a marketable limit order, in CME's layout: for each price level it reaches a T record
  (side = aggressor, size = traded at that price, order_id = aggressor) followed by an F record per
  resting order hit (its side, price, traded size, id); then a C record per fully filled order
  (size = what it had left) or an M record per partly filled one (same price, the smaller size,
  so it keeps its place), in fill order; then an A record for the aggressor's unfilled rest at its
  limit price. The T/F records are the trade summary message, the rest the book update message
  (two sequence numbers, assigned by the merge).
* Clear + snapshot: an R record (side N, UNDEF_PRICE, size 0, order_id 0), then an A record per
  resting order, bids best level first, then asks, each level in queue order; every record
  flagged F_SNAPSHOT. One event, so the book is never observable half rebuilt, and it is the same
  book afterwards.

An event that would not fit in the records left becomes an Add (one record, always possible).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from generator.flow import (
    BEHIND_POOL,
    FAR_OFFSET_TICKS,
    FAR_POOL,
    P_ADD,
    P_CANCEL_BEHIND,
    P_CANCEL_FAR,
    P_CANCEL_TOUCH,
    P_CLEAR,
    P_MODIFY,
    P_MODIFY_DOWN,
    P_MODIFY_KEEPS_SIZE,
    P_MODIFY_PRICE,
    P_MODIFY_TOWARD,
    P_PARTIAL_CANCEL,
    P_REVERSION,
    P_TRADE,
    POOLS,
    TOUCH_POOL,
    FlowTables,
    add_offset_draw,
    from_table,
    gap_draw,
    id_step_draw,
    in_delta_draw,
    latency_draw,
    size_draw,
    uniform,
)
from generator.matching import (
    ASK,
    BID,
    EMPTY,
    L_HEAD,
    L_PRICE,
    NO_PRICE,
    O_ID,
    O_NEXT,
    O_PRICE,
    O_SIDE,
    O_SIZE,
    ROOM_OK,
    SIDE_BYTE_ASK,
    SIDE_BYTE_BID,
    BookArrays,
    add_order,
    best_price,
    modify_order,
    pool_order,
    reduce_order,
    remove_order,
    room_for_event,
)
from mbo_core.book.kernel import (
    ACTION_ADD,
    ACTION_CANCEL,
    ACTION_CLEAR,
    ACTION_FILL,
    ACTION_MODIFY,
    ACTION_TRADE,
    F_LAST,
    F_SNAPSHOT,
    UNDEF_PRICE,
)

# The DBN record vocabulary (flags, actions, sides) is defined once, beside the book kernel.
SIDE_BYTE_NONE = ord("N")

# Per-book state columns (int64), beside the books' BookArrays.
(
    BK_FAIR_ROW,  # the instrument's row in the fair-value array
    BK_TICK,
    BK_NEXT_ID,  # last order id handed out
    BK_TS_EVENT,  # timing of the book's next event
    BK_TS_RECV,
    BK_IN_DELTA,
    BK_EVENTS,
    BK_LAST_TS_EVENT,  # timing of its last event
    BK_LAST_TS_RECV,
) = range(9)
BK_COLUMNS = 9

# Output columns: records and events of a window, in generation order.
R_ORDER_ID, R_PRICE, R_SIZE, R_FLAGS, R_ACTION, R_SIDE = range(6)
RECORD_COLUMNS = 6
E_BOOK, E_TS_EVENT, E_TS_RECV, E_IN_DELTA, E_RECORDS = range(5)
EVENT_COLUMNS = 5
# cursor: where run_window stands, so that it can resume after the caller grew an array.
C_BOOK, C_RECORDS, C_EVENTS, C_USED = range(4)

# run_window statuses besides matching.NEED_*: done, or an output/scratch array is too small.
DONE = ROOM_OK
NEED_OUTPUT = 10
NEED_SCRATCH = 11


@njit(cache=True)
def schedule_next(bk: np.ndarray, rng: np.ndarray, b: int, gap_mixture: np.ndarray) -> None:
    """Time book b's next event: a gap after its previous one, then delivery. A feed handler
    delivers in order, so ts_recv never goes back even after a fast packet; the publisher sent
    the packet between the event and its receipt, so ts_in_delta <= ts_recv - ts_event."""
    ts_event = bk[b, BK_TS_EVENT] + gap_draw(rng, b, gap_mixture)
    ts_recv = max(ts_event + latency_draw(rng, b), bk[b, BK_TS_RECV])
    bk[b, BK_TS_EVENT] = ts_event
    bk[b, BK_TS_RECV] = ts_recv
    bk[b, BK_IN_DELTA] = min(in_delta_draw(rng, b), ts_recv - ts_event)


@njit(cache=True)
def run_window(
    s: BookArrays,
    bk: np.ndarray,
    rng: np.ndarray,
    ft: FlowTables,
    fair: np.ndarray,
    fair_first_ns: int,
    fair_step_ns: int,
    until: int,
    budget: int,
    out_rec: np.ndarray,
    out_evt: np.ndarray,
    scratch: np.ndarray,
    cursor: np.ndarray,
) -> int:
    """Generate, book after book from cursor[C_BOOK], every event with ts_recv < until, until
    `budget` records are used. Returns DONE, or which array to grow before calling again (the
    cursor keeps the place)."""
    n_books = bk.shape[0]
    while cursor[C_BOOK] < n_books:
        b = cursor[C_BOOK]
        while bk[b, BK_TS_RECV] < until and cursor[C_USED] < budget:
            need = room_for_event(s, b, POOLS)
            if need != ROOM_OK:
                return need
            # The largest event: a snapshot (1 + orders) or a trade through every order.
            largest = 3 * s.book_orders[b] + 3
            if (
                out_rec.shape[0] - cursor[C_RECORDS] < largest
                or cursor[C_EVENTS] >= out_evt.shape[0]
            ):
                return NEED_OUTPUT
            if scratch.shape[0] <= s.book_orders[b]:
                return NEED_SCRATCH
            n = cursor[C_RECORDS]
            fair_ticks = _fair_at(
                fair, bk[b, BK_FAIR_ROW], bk[b, BK_TS_EVENT], fair_first_ns, fair_step_ns
            )
            count = _event(
                s, bk, rng, ft, fair_ticks, b, budget - cursor[C_USED], out_rec, n, scratch
            )
            e = cursor[C_EVENTS]
            out_evt[e, E_BOOK] = b
            out_evt[e, E_TS_EVENT] = bk[b, BK_TS_EVENT]
            out_evt[e, E_TS_RECV] = bk[b, BK_TS_RECV]
            out_evt[e, E_IN_DELTA] = bk[b, BK_IN_DELTA]
            out_evt[e, E_RECORDS] = count
            cursor[C_EVENTS] = e + 1
            cursor[C_RECORDS] = n + count
            cursor[C_USED] += count
            bk[b, BK_EVENTS] += 1
            bk[b, BK_LAST_TS_EVENT] = bk[b, BK_TS_EVENT]
            bk[b, BK_LAST_TS_RECV] = bk[b, BK_TS_RECV]
            schedule_next(bk, rng, b, ft.gap)
        if cursor[C_USED] >= budget:
            break
        cursor[C_BOOK] = b + 1
    return DONE


@njit(cache=True)
def _fair_at(fair: np.ndarray, row: int, ts: int, first_ns: int, step_ns: int) -> float:
    k = (ts - first_ns) // step_ns
    k = min(max(k, 0), fair.shape[1] - 1)
    return float(fair[row, k])


@njit(cache=True)
def _event(
    s: BookArrays,
    bk: np.ndarray,
    rng: np.ndarray,
    ft: FlowTables,
    fair_ticks: float,
    b: int,
    left: int,
    out: np.ndarray,
    n: int,
    scratch: np.ndarray,
) -> int:
    """Book b's next event into out[n:]; its record count (<= left)."""
    params = ft.params
    orders = s.book_orders[b]
    if uniform(rng, b) < params[P_CLEAR] and orders + 1 <= left:
        return _clear_and_snapshot(s, b, out, n)
    row = POOLS * b
    touch = s.pool_n[row + TOUCH_POOL]
    behind = s.pool_n[row + BEHIND_POOL]
    # Cumulative weights beyond the add's: cancels per pool, modify, trade.
    cancel_touch = params[P_CANCEL_TOUCH] * touch
    cancel_behind = cancel_touch + params[P_CANCEL_BEHIND] * behind
    cancel_far = cancel_behind + params[P_CANCEL_FAR] * s.pool_n[row + FAR_POOL]
    modify = cancel_far + params[P_MODIFY] * (touch + behind)
    x = uniform(rng, b) * (params[P_ADD] + modify + params[P_TRADE]) - params[P_ADD]
    if x < 0.0:
        return _add(s, bk, rng, ft, fair_ticks, b, out, n)
    if x < cancel_touch:
        return _cancel(s, rng, ft, b, TOUCH_POOL, out, n)
    if x < cancel_behind:
        return _cancel(s, rng, ft, b, BEHIND_POOL, out, n)
    if x < cancel_far:
        return _cancel(s, rng, ft, b, FAR_POOL, out, n)
    if x < modify:
        return _modify(s, bk, rng, ft, b, touch, behind, out, n)
    return _trade(s, bk, rng, ft, fair_ticks, b, left, out, n, scratch)


@njit(cache=True, inline="always")
def _side_byte(side: int) -> int:
    return SIDE_BYTE_BID if side == BID else SIDE_BYTE_ASK


@njit(cache=True, inline="always")
def _write(
    out: np.ndarray,
    n: int,
    order_id: int,
    price: int,
    size: int,
    flags: int,
    action: int,
    side_byte: int,
) -> None:
    out[n, R_ORDER_ID] = order_id
    out[n, R_PRICE] = price
    out[n, R_SIZE] = size
    out[n, R_FLAGS] = flags
    out[n, R_ACTION] = action
    out[n, R_SIDE] = side_byte


@njit(cache=True)
def _next_order_id(bk: np.ndarray, rng: np.ndarray, b: int) -> int:
    order_id = int(bk[b, BK_NEXT_ID]) + id_step_draw(rng, b)
    bk[b, BK_NEXT_ID] = order_id
    return order_id


@njit(cache=True)
def _fair_touch(fair_ticks: float, tick: int, side: int) -> int:
    """Where an order joins an empty side: the tick just under (bid) or over (ask) the fair
    value, so a book that empties restarts around the instrument's price."""
    bid_ticks = max(1, math.floor(fair_ticks))
    return (bid_ticks if side == BID else bid_ticks + 1) * tick


@njit(cache=True)
def _add(
    s: BookArrays,
    bk: np.ndarray,
    rng: np.ndarray,
    ft: FlowTables,
    fair_ticks: float,
    b: int,
    out: np.ndarray,
    n: int,
) -> int:
    """A passive limit order some ticks behind its side's touch (never reaching the other)."""
    side = BID if uniform(rng, b) < 0.5 else ASK
    offset_ticks = add_offset_draw(rng, b, ft.offset)
    if offset_ticks <= 0:
        pool = TOUCH_POOL
    elif offset_ticks < FAR_OFFSET_TICKS:
        pool = BEHIND_POOL
    else:
        pool = FAR_POOL
    tick = bk[b, BK_TICK]
    offset = offset_ticks * tick
    bid = best_price(s, b, BID)
    ask = best_price(s, b, ASK)
    price = 0
    if side == BID:
        touch = bid if bid != NO_PRICE else _fair_touch(fair_ticks, tick, BID)
        price = touch - offset
        if ask != NO_PRICE and price >= ask:
            price = ask - tick
        if price < tick:
            price = tick
            if ask != NO_PRICE and ask <= tick:
                side = ASK  # no bid fits under an ask at the minimum price
    if side == ASK:
        touch = ask if ask != NO_PRICE else _fair_touch(fair_ticks, tick, ASK)
        price = touch + offset
        if bid != NO_PRICE and price <= bid:
            price = bid + tick
    order_id = _next_order_id(bk, rng, b)
    size = size_draw(rng, b, ft.add_size)
    add_order(s, b, POOLS, order_id, side, price, size, pool)
    _write(out, n, order_id, price, size, F_LAST, ACTION_ADD, _side_byte(side))
    return 1


@njit(cache=True)
def _cancel(
    s: BookArrays, rng: np.ndarray, ft: FlowTables, b: int, pool: int, out: np.ndarray, n: int
) -> int:
    """A uniformly random order of the pool leaves, or (partial cancel) loses some size."""
    o = pool_order(s, b, POOLS, pool, uniform(rng, b))
    order_id = s.orders[o, O_ID]
    price = s.orders[o, O_PRICE]
    side = s.orders[o, O_SIDE]
    size = s.orders[o, O_SIZE]
    if size > 1 and uniform(rng, b) < ft.params[P_PARTIAL_CANCEL]:
        cut = 1 + int(uniform(rng, b) * (size - 1))
        reduce_order(s, o, size - cut)
        size = cut
    else:
        remove_order(s, b, POOLS, o)
    _write(out, n, order_id, price, size, F_LAST, ACTION_CANCEL, _side_byte(side))
    return 1


@njit(cache=True)
def _modify(
    s: BookArrays,
    bk: np.ndarray,
    rng: np.ndarray,
    ft: FlowTables,
    b: int,
    touch: int,
    behind: int,
    out: np.ndarray,
    n: int,
) -> int:
    """Re-quote a uniformly random touch-or-behind order: move it (mostly one tick), or change
    its size. The record carries the new price and size."""
    params = ft.params
    x = uniform(rng, b) * (touch + behind)
    if x < touch:
        o = pool_order(s, b, POOLS, TOUCH_POOL, x / touch)
    else:
        o = pool_order(s, b, POOLS, BEHIND_POOL, (x - touch) / behind)
    side = s.orders[o, O_SIDE]
    price = s.orders[o, O_PRICE]
    size = s.orders[o, O_SIZE]
    tick = bk[b, BK_TICK]
    new_price = price
    new_size = size
    kind = uniform(rng, b)
    move_or_down = params[P_MODIFY_PRICE] + params[P_MODIFY_DOWN]
    if kind < params[P_MODIFY_PRICE] or (size == 1 and kind < move_or_down):
        toward_touch = uniform(rng, b) < params[P_MODIFY_TOWARD]
        move = from_table(rng, b, ft.move) * tick
        if side == BID:
            new_price = price + move if toward_touch else price - move
            ask = best_price(s, b, ASK)
            if ask != NO_PRICE and new_price >= ask:
                new_price = ask - tick
        else:
            new_price = price - move if toward_touch else price + move
            bid = best_price(s, b, BID)
            if bid != NO_PRICE and new_price <= bid:
                new_price = bid + tick
        if new_price < tick:
            new_price = price
        if uniform(rng, b) >= params[P_MODIFY_KEEPS_SIZE]:
            new_size = size_draw(rng, b, ft.add_size)
    elif kind < move_or_down:
        new_size = 1 + int(uniform(rng, b) * (size - 1))
    else:
        new_size = size + size_draw(rng, b, ft.add_size)
    order_id = s.orders[o, O_ID]
    modify_order(s, b, o, new_price, new_size)
    _write(out, n, order_id, new_price, new_size, F_LAST, ACTION_MODIFY, _side_byte(side))
    return 1


@njit(cache=True)
def _trade(
    s: BookArrays,
    bk: np.ndarray,
    rng: np.ndarray,
    ft: FlowTables,
    fair_ticks: float,
    b: int,
    left: int,
    out: np.ndarray,
    n: int,
    scratch: np.ndarray,
) -> int:
    """A marketable limit order: fills against the opposite side in price-time order, its rest
    (if any) rests at its limit price. Falls back to an add when it cannot trade or fit."""
    bid = best_price(s, b, BID)
    ask = best_price(s, b, ASK)
    if bid == NO_PRICE and ask == NO_PRICE:
        return _add(s, bk, rng, ft, fair_ticks, b, out, n)
    tick = bk[b, BK_TICK]
    if bid == NO_PRICE:
        side = BID
    elif ask == NO_PRICE:
        side = ASK
    else:
        # Lean toward the fair value: publishers of one instrument stay around one price.
        lean = ft.params[P_REVERSION] * (fair_ticks - (bid + ask) / (2.0 * tick))
        p_buy = min(0.9, max(0.1, 0.5 + lean))
        side = BID if uniform(rng, b) < p_buy else ASK
    through = from_table(rng, b, ft.through) * tick
    limit = ask + through if side == BID else max(tick, bid - through)
    size = size_draw(rng, b, ft.trade_size)
    opposite = ASK if side == BID else BID
    row = 2 * b + opposite

    # Plan without touching the book: fills (slots into scratch) and the record count.
    fills = 0
    prices = 0
    remaining = size
    j = s.lad_n[row] - 1
    while j >= 0 and remaining > 0:
        lv = s.lad_lvl[row, j]
        level_price = s.levels[lv, L_PRICE]
        if (side == BID and level_price > limit) or (side == ASK and level_price < limit):
            break
        prices += 1
        o = s.levels[lv, L_HEAD]
        while o != EMPTY and remaining > 0:
            scratch[fills] = o
            fills += 1
            remaining -= min(remaining, s.orders[o, O_SIZE])
            o = s.orders[o, O_NEXT]
        j -= 1
    count = prices + 2 * fills + (1 if remaining > 0 else 0)
    if count > left:
        return _add(s, bk, rng, ft, fair_ticks, b, out, n)

    aggressor = _next_order_id(bk, rng, b)
    aggressor_byte = _side_byte(side)
    opposite_byte = _side_byte(opposite)
    # Trade summary: a T per price level, then that level's Fs.
    k = n
    left_to_fill = size
    trade_record = -1
    for f in range(fills):
        o = scratch[f]
        price = s.orders[o, O_PRICE]
        if trade_record < 0 or out[trade_record, R_PRICE] != price:
            trade_record = k
            _write(out, k, aggressor, price, 0, 0, ACTION_TRADE, aggressor_byte)
            k += 1
        traded = min(left_to_fill, s.orders[o, O_SIZE])
        left_to_fill -= traded
        out[trade_record, R_SIZE] += traded
        _write(out, k, s.orders[o, O_ID], price, traded, 0, ACTION_FILL, opposite_byte)
        k += 1
    # Book update: what the fills did to the resting orders, then the aggressor's rest.
    left_to_fill = size
    for f in range(fills):
        o = scratch[f]
        resting = s.orders[o, O_SIZE]
        traded = min(left_to_fill, resting)
        left_to_fill -= traded
        if traded == resting:
            _write(
                out,
                k,
                s.orders[o, O_ID],
                s.orders[o, O_PRICE],
                resting,
                0,
                ACTION_CANCEL,
                opposite_byte,
            )
            remove_order(s, b, POOLS, o)
        else:
            _write(
                out,
                k,
                s.orders[o, O_ID],
                s.orders[o, O_PRICE],
                resting - traded,
                0,
                ACTION_MODIFY,
                opposite_byte,
            )
            reduce_order(s, o, resting - traded)
        k += 1
    if left_to_fill > 0:
        add_order(s, b, POOLS, aggressor, side, limit, left_to_fill, TOUCH_POOL)
        _write(out, k, aggressor, limit, left_to_fill, 0, ACTION_ADD, aggressor_byte)
        k += 1
    out[k - 1, R_FLAGS] = F_LAST
    return k - n


@njit(cache=True)
def _clear_and_snapshot(s: BookArrays, b: int, out: np.ndarray, n: int) -> int:
    """R, then every resting order as an Add in book order; all F_SNAPSHOT, F_LAST at the end."""
    _write(out, n, 0, UNDEF_PRICE, 0, F_SNAPSHOT, ACTION_CLEAR, SIDE_BYTE_NONE)
    k = n + 1
    for side in range(2):
        row = 2 * b + side
        side_byte = _side_byte(side)
        for j in range(s.lad_n[row] - 1, -1, -1):
            o = s.levels[s.lad_lvl[row, j], L_HEAD]
            while o != EMPTY:
                orders = s.orders
                _write(
                    out,
                    k,
                    orders[o, O_ID],
                    orders[o, O_PRICE],
                    orders[o, O_SIZE],
                    F_SNAPSHOT,
                    ACTION_ADD,
                    side_byte,
                )
                k += 1
                o = orders[o, O_NEXT]
    out[k - 1, R_FLAGS] = F_SNAPSHOT | F_LAST
    return k - n
