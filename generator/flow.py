"""The order-flow model: what each book's next event is, when it happens, and its numbers.

Parameters and calibration live here; the per-event code that applies them is compiled
(events.py), so the distributions are numba functions drawing from a per-book splitmix64 stream.

Calibrated on the only real capture we have, shared/data/CLX5_mbo.dbn (GLBX.MDP3 CL crude
futures, publisher 1, channel 26, 2025-09-24 19:30-22:00 UTC: 38,212 records, 32,053 events).
The numbers quoted below were measured on that file (book rebuilt record by record; offsets are in
ticks of 0.01).

Event mix (per event, at the target book size). CLX5: Add 46.6 %, Cancel 41.3 %, Modify 7.1 %,
trade 5.0 % (an event starting with T). Cancels and modifies hit resting orders, so their weights
scale with the number of orders they can hit (each order has a constant hazard, the
Cont-Stoikov-Talreja queue model), which keeps the book size stationary instead of drifting.
The hazard depends on where an order was placed: orders are kept in three pools, at (or inside)
the touch, 1-4 ticks behind it, and 5+ ticks behind it, which CLX5 adds split 57/17/26 % and
cancels 58/17/26 %. Per-pool targets (the stock at which a pool's cancel weight equals its CLX5
share) of 16 / 60 / 300 orders reproduce CLX5's depth: ~8 orders at each touch (CLX5 7.5-8.6)
and 8-4 on each of the next four levels (CLX5 11-5), with a long tail of far orders (CLX5 began
mid-session with ~1,200 unknown resting orders). Clear + snapshot events have no CLX5 counterpart
(no R there); one in 20,000 events exercises that path without dominating the record count.

Inter-arrival of a book's events (ts_event gaps) is strongly multi-modal in CLX5: log10(ns)
peaks near 3 (packets that carry several orders of one participant, ~1 us apart), near 5
(algorithms reacting to the previous event, ~100 us) and a broad hump from 6 to 10 (independent
arrivals, ms to seconds). A three-component log-normal mixture fitted to the CLX5 percentiles
(weights 0.18/0.47/0.35, log10 centres 3.1/5.1/7.5, sd 0.45/0.75/1.3, clipped to [100 ns, 15 s])
gives p10 1.4 us, p25 20 us, p50 237 us, p75 6.6 ms, p90 174 ms, p95 0.8 s (CLX5: 1.2 us, 19 us,
244 us, 4 ms, 240 ms, 1.0 s). That is ~3 events/s per book, so a long file spans days of
simulated time (the clock runs continuously: no session breaks).

Latencies: ts_recv - ts_event in CLX5 ranges from 56 us to ~20 ms at F_LAST: p25 143 us, median
301 us, p75 1.0 ms, p95 8.9 ms. Each packet draws 50 us + log-normal (median 150 us, sigma 1.5),
capped at 50 ms, and is delivered in order (never before the book's previous packet), which
queues packets behind slow ones in bursts: p25 159 us, median 370 us, p75 0.9 ms, p95 3.6 ms.
ts_in_delta
(CLX5: min 9 us, p50 14.4 us, p99 22.6 us): 9 us + log-normal (median 5.3 us, sigma 0.4), and
never more than ts_recv - ts_event.

Add prices, in ticks behind the same side's best (negative = inside the spread). CLX5:
-1: 3.5 %, 0 (join the touch): 53.9 %, 1: 6.5 %, 2: 3.8 %, 3: 3.9 %, 4: 2.4 %, and 26 % far away
(5 to ~400 ticks, median 54): the far part is log-normal (median 50, sigma 0.75) clipped to
[5, 400]. An add never reaches the opposite side: improving a one-tick spread joins the touch.

Sizes (lots). Adds, CLX5: 1: 69.2 %, 2: 22.2 %, 3: 2.6 %, 4: 2.3 %, 9: 2.3 % (one participant's
habit, kept), 5-10 rare, 0.18 % above 10 (median 15). Aggressors use the traded-quantity table of
CLX5 trade events: 1: 69.8 %, 2: 13.2 %, 3: 4.7 %, 4: 3.8 % ... 3.1 % above 10. Tails above 10
are 10 + ceil(log-normal(median 5, sigma 1.2)), capped at 500.

Cancels take a uniformly random resting order of the pool the event chose. CME sends only full
cancels (size reductions come as Modify); 10 % of ours are partial so that consumers see both.

Modifies take a uniformly random order of the touch and behind pools (re-quoting near the
touch). CLX5: 78 % move the price (±1 tick 85 %, 2: 8 %,
3-5: 7 %; toward the touch 55 %), keeping the size 70 % of the time; 20 % only reduce the size
(keeps priority); 2 % only increase it (loses priority). A move that would reach the opposite
side stops one tick short of it.

Trades: a marketable limit order at the opposite touch (97 %), one tick through it (2 %) or two
(1 %): 98.5 % of CLX5 trade events fill at a single price. Whatever it cannot fill rests at its
limit price, in the same event. The buy/sell choice leans toward the instrument's fair value
(p_buy = 0.5 + 0.1 * (fair - mid) in ticks, kept in [0.1, 0.9]): several publishers' books of
one instrument stay around one price instead of drifting apart. The fair value is a random walk
on a one-second grid of 0.094 ticks per sqrt(second), CLX5's realized volatility of the mid over
60 s steps; the resulting books move 0.08 ticks per sqrt(second) with a one-tick spread 96 % of
the time (CLX5: 84 %, two ticks otherwise).

Order ids increase by a geometric step (p = 0.25, median 3: CME numbers orders across
instruments, so one instrument's ids have gaps, CLX5 median 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

# (value, probability) tables; the missing mass of the size tables is the tail above 10.
ADD_OFFSET_NEAR: tuple[tuple[int, float], ...] = (
    (-1, 0.035),
    (0, 0.539),
    (1, 0.065),
    (2, 0.038),
    (3, 0.039),
    (4, 0.024),
)
ADD_SIZE: tuple[tuple[int, float], ...] = (
    (1, 0.6924),
    (2, 0.2219),
    (3, 0.0261),
    (4, 0.0232),
    (5, 0.0041),
    (6, 0.0035),
    (7, 0.0007),
    (8, 0.0029),
    (9, 0.0227),
    (10, 0.0007),
)
TRADE_SIZE: tuple[tuple[int, float], ...] = (
    (1, 0.6982),
    (2, 0.1317),
    (3, 0.0473),
    (4, 0.0384),
    (5, 0.0126),
    (6, 0.0145),
    (7, 0.0120),
    (8, 0.0095),
    (9, 0.0025),
    (10, 0.0025),
)
TRADE_THROUGH_TICKS: tuple[tuple[int, float], ...] = ((0, 0.97), (1, 0.02), (2, 0.01))
MODIFY_MOVE_TICKS: tuple[tuple[int, float], ...] = (
    (1, 0.85),
    (2, 0.08),
    (3, 0.03),
    (4, 0.02),
    (5, 0.02),
)
# Inter-arrival mixture: (weight, log10 ns centre, log10 sd).
GAP_MIXTURE: tuple[tuple[float, float, float], ...] = (
    (0.18, 3.1, 0.45),
    (0.47, 5.1, 0.75),
    (0.35, 7.5, 1.3),
)
GAP_MIN_NS = 100
GAP_MAX_NS = 15_000_000_000
#: Order-id step: geometric with this success probability.
ORDER_ID_STEP_P = 0.25

#: Order pools (MatchingBook), by where an add was placed relative to its side's touch.
TOUCH_POOL = 0  # joins or improves the touch (offset <= 0)
BEHIND_POOL = 1  # 1..4 ticks behind
FAR_POOL = 2  # FAR_OFFSET_TICKS or more behind
POOLS = 3
FAR_OFFSET_TICKS = 5
#: Share of adds (and, as CLX5 shows, of cancels) that each pool gets.
POOL_SHARES: tuple[float, float, float] = (
    sum(p for v, p in ADD_OFFSET_NEAR if v <= 0),
    sum(p for v, p in ADD_OFFSET_NEAR if v > 0),
    1.0 - sum(p for _, p in ADD_OFFSET_NEAR),
)


@dataclass(frozen=True, slots=True)
class FlowParams:
    """Knobs of the order-flow model; the defaults are the CLX5 calibration (module docstring)."""

    add_weight: float = 0.466
    cancel_weight: float = 0.413
    modify_weight: float = 0.071
    trade_weight: float = 0.050
    #: Resting orders per pool at which the pool's cancel weight equals its CLX5 share.
    target_touch_orders: int = 16
    target_behind_orders: int = 60
    target_far_orders: int = 300
    #: Probability that an event is a Clear + snapshot of the whole book.
    clear_probability: float = 1 / 20_000
    partial_cancel_probability: float = 0.10
    modify_price_probability: float = 0.78
    modify_size_down_probability: float = 0.20
    modify_keeps_size_probability: float = 0.70
    modify_toward_touch_probability: float = 0.55
    #: How much the buy probability of an aggressor moves per tick of (fair value - mid).
    reversion_per_tick: float = 0.10
    #: Fair-value random walk, ticks per sqrt(second).
    fair_volatility_ticks: float = 0.094

    def __post_init__(self) -> None:
        weights = (self.add_weight, self.cancel_weight, self.modify_weight, self.trade_weight)
        if min(weights) < 0 or self.add_weight <= 0:
            raise ValueError("event weights must be >= 0 and the add weight > 0")
        if min(self.target_touch_orders, self.target_behind_orders, self.target_far_orders) < 1:
            raise ValueError("target order counts must be >= 1")
        probabilities = (
            self.clear_probability,
            self.partial_cancel_probability,
            self.modify_price_probability,
            self.modify_size_down_probability,
            self.modify_keeps_size_probability,
            self.modify_toward_touch_probability,
        )
        if not all(0.0 <= p <= 1.0 for p in probabilities):
            raise ValueError("probabilities must be within [0, 1]")
        if self.modify_price_probability + self.modify_size_down_probability > 1.0:
            raise ValueError("modify_price_probability + modify_size_down_probability > 1")
        if self.fair_volatility_ticks < 0 or self.reversion_per_tick < 0:
            raise ValueError("fair_volatility_ticks and reversion_per_tick must be >= 0")

    def compiled(self) -> FlowTables:
        """The parameters as the arrays the compiled event loop reads (P_* indexes)."""
        touch_behind = self.target_touch_orders + self.target_behind_orders
        params = np.zeros(N_PARAMS, dtype=np.float64)
        params[P_ADD] = self.add_weight
        params[P_CANCEL_TOUCH] = (
            self.cancel_weight * POOL_SHARES[TOUCH_POOL] / self.target_touch_orders
        )
        params[P_CANCEL_BEHIND] = (
            self.cancel_weight * POOL_SHARES[BEHIND_POOL] / self.target_behind_orders
        )
        params[P_CANCEL_FAR] = self.cancel_weight * POOL_SHARES[FAR_POOL] / self.target_far_orders
        params[P_MODIFY] = self.modify_weight / touch_behind
        params[P_TRADE] = self.trade_weight
        params[P_CLEAR] = self.clear_probability
        params[P_PARTIAL_CANCEL] = self.partial_cancel_probability
        params[P_MODIFY_PRICE] = self.modify_price_probability
        params[P_MODIFY_DOWN] = self.modify_size_down_probability
        params[P_MODIFY_KEEPS_SIZE] = self.modify_keeps_size_probability
        params[P_MODIFY_TOWARD] = self.modify_toward_touch_probability
        params[P_REVERSION] = self.reversion_per_tick
        return FlowTables(
            params=params,
            offset=_table(ADD_OFFSET_NEAR),
            add_size=_table(ADD_SIZE),
            trade_size=_table(TRADE_SIZE),
            through=_table(TRADE_THROUGH_TICKS, complete=True),
            move=_table(MODIFY_MOVE_TICKS, complete=True),
            gap=np.array(GAP_MIXTURE, dtype=np.float64),
        )


# Indexes of FlowTables.params.
(
    P_ADD,
    P_CANCEL_TOUCH,
    P_CANCEL_BEHIND,
    P_CANCEL_FAR,
    P_MODIFY,
    P_TRADE,
    P_CLEAR,
    P_PARTIAL_CANCEL,
    P_MODIFY_PRICE,
    P_MODIFY_DOWN,
    P_MODIFY_KEEPS_SIZE,
    P_MODIFY_TOWARD,
    P_REVERSION,
) = range(13)
N_PARAMS = 13


class FlowTables(NamedTuple):
    """FlowParams for compiled code. Tables are (2, n) float64: values, then cumulative
    probabilities; a draw past the last cumulative probability goes to the table's tail."""

    params: np.ndarray
    offset: np.ndarray
    add_size: np.ndarray
    trade_size: np.ndarray
    through: np.ndarray
    move: np.ndarray
    gap: np.ndarray  # (3, 3): weight, log10 centre, log10 sd per component


def _table(table: tuple[tuple[int, float], ...], *, complete: bool = False) -> np.ndarray:
    out = np.array([[v for v, _ in table], np.cumsum([p for _, p in table])], dtype=np.float64)
    if complete:
        out[1, -1] = 1.0  # no tail: rounding must not leave one
    return out


# ------------------------------------------------------------------ random numbers


@njit(cache=True, inline="always")
def next_u64(rng: np.ndarray, b: int) -> np.uint64:
    """splitmix64 (Steele, Lea, Flood 2014): one 64-bit word from book b's stream."""
    x = rng[b] + np.uint64(0x9E3779B97F4A7C15)
    rng[b] = x
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.uint64(x ^ (x >> np.uint64(31)))


@njit(cache=True, inline="always")
def uniform(rng: np.ndarray, b: int) -> float:
    """Uniform in [0, 1) with 53 random bits."""
    return float(next_u64(rng, b) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def normal(rng: np.ndarray, b: int) -> float:
    """Standard normal (Box-Muller, one of the pair)."""
    u = 1.0 - uniform(rng, b)  # in (0, 1]: log is finite
    return math.sqrt(-2.0 * math.log(u)) * math.cos(2.0 * math.pi * uniform(rng, b))


@njit(cache=True)
def lognormal(rng: np.ndarray, b: int, median: float, sigma: float) -> float:
    return median * math.exp(sigma * normal(rng, b))


#: from_table's answer for a draw in the table's tail.
TAIL = -(1 << 62)


@njit(cache=True)
def from_table(rng: np.ndarray, b: int, table: np.ndarray) -> int:
    """A value of a (values, cumulative probabilities) table; TAIL for a draw in its tail."""
    u = uniform(rng, b)
    for k in range(table.shape[1]):
        if u < table[1, k]:
            return int(table[0, k])
    return TAIL


@njit(cache=True)
def size_draw(rng: np.ndarray, b: int, table: np.ndarray) -> int:
    """Lots from a 1..10 table, its missing mass a tail of 10 + ceil(log-normal(5, 1.2))."""
    size = from_table(rng, b, table)
    if size == TAIL:
        size = min(500, 10 + math.ceil(lognormal(rng, b, 5.0, 1.2)))
    return size


@njit(cache=True)
def add_offset_draw(rng: np.ndarray, b: int, table: np.ndarray) -> int:
    """Ticks behind the touch: the near table, else far log-normal (median 50, sigma 0.75)."""
    offset = from_table(rng, b, table)
    if offset == TAIL:
        offset = int(min(400.0, max(5.0, round(lognormal(rng, b, 50.0, 0.75)))))
    return offset


@njit(cache=True)
def gap_draw(rng: np.ndarray, b: int, mixture: np.ndarray) -> int:
    """ns between two events of a book: the three-component log-normal mixture."""
    u = uniform(rng, b)
    k = 0
    while k < mixture.shape[0] - 1 and u >= mixture[k, 0]:
        u -= mixture[k, 0]
        k += 1
    gap = 10.0 ** (mixture[k, 1] + mixture[k, 2] * normal(rng, b))
    return int(min(max(gap, GAP_MIN_NS), GAP_MAX_NS))


@njit(cache=True)
def latency_draw(rng: np.ndarray, b: int) -> int:
    """ts_recv - ts_event before in-order delivery: 50 us + log-normal(150 us, 1.5), <= 50 ms."""
    return 50_000 + int(min(lognormal(rng, b, 150_000.0, 1.5), 50_000_000.0))


@njit(cache=True)
def in_delta_draw(rng: np.ndarray, b: int) -> int:
    """ts_in_delta before capping: 9 us + log-normal(5.3 us, 0.4)."""
    return 9_000 + int(lognormal(rng, b, 5_300.0, 0.4))


@njit(cache=True)
def id_step_draw(rng: np.ndarray, b: int) -> int:
    """Geometric(ORDER_ID_STEP_P) >= 1."""
    u = 1.0 - uniform(rng, b)
    return 1 + int(math.log(u) / math.log(1.0 - ORDER_ID_STEP_P))


# ------------------------------------------------------------------- fair value


class FairValues:
    """Every instrument's latent price in ticks: a Gaussian random walk on a one-second grid,
    each instrument's path drawn in time order from its own numpy generator. `covering` hands
    the compiled loop the grid points of a window as one (instruments, steps) array; a value
    never depends on which book asked or when."""

    STEP_NS = 1_000_000_000

    def __init__(
        self, start_ticks: list[float], start_ns: int, volatility: float, seed: int
    ) -> None:
        self._rngs = [np.random.default_rng([seed, i, 0xFA1]) for i in range(len(start_ticks))]
        self._start_ns = start_ns
        self._volatility = volatility
        self._first_step = 0
        self._values = np.array(start_ticks, dtype=np.float64).reshape(-1, 1)

    def step_of(self, ts: int) -> int:
        return max(0, ts - self._start_ns) // self.STEP_NS

    def covering(self, first_ts: int, last_ts: int) -> tuple[np.ndarray, int]:
        """(values, step of column 0) covering grid steps from first_ts to last_ts; columns
        before first_ts are forgotten (a window never looks back further)."""
        first = max(self._first_step, self.step_of(first_ts))
        last = self.step_of(last_ts)
        have = self._first_step + self._values.shape[1] - 1
        if last > have:
            new = last - have
            shocks = np.stack([rng.standard_normal(new) for rng in self._rngs])
            # Summed one step at a time from the last value: the same floats however the path
            # is cut into windows.
            walk = np.cumsum(
                np.concatenate([self._values[:, -1:], shocks * self._volatility], axis=1), axis=1
            )
            self._values = np.concatenate([self._values, walk[:, 1:]], axis=1)
        self._values = self._values[:, first - self._first_step :]
        self._first_step = first
        return self._values, first
