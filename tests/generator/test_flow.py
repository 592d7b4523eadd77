"""The order-flow model's distributions match the calibration they document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from generator import flow
from generator.flow import FairValues, FlowParams

N = 20_000


def draws(sample: Callable[[np.ndarray, int], float | int], seed: int = 1) -> np.ndarray:
    rng = np.array([seed], dtype=np.uint64)
    return np.array([sample(rng, 0) for _ in range(N)])


def test_streams_are_deterministic_and_independent_per_book() -> None:
    rng = np.array([7, 7, 8], dtype=np.uint64)
    a = [flow.next_u64(rng, 0) for _ in range(5)]
    b = [flow.next_u64(rng, 1) for _ in range(5)]
    c = [flow.next_u64(rng, 2) for _ in range(5)]
    assert a == b and a != c


def test_uniform_and_normal() -> None:
    u = draws(flow.uniform)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert u.mean() == pytest.approx(0.5, abs=0.01)
    z = draws(flow.normal)
    assert z.mean() == pytest.approx(0.0, abs=0.03) and z.std() == pytest.approx(1.0, abs=0.03)


def test_sizes_follow_the_clx5_tables() -> None:
    tables = FlowParams().compiled()
    adds = draws(lambda rng, b: flow.size_draw(rng, b, tables.add_size))
    assert (adds == 1).mean() == pytest.approx(0.692, abs=0.01)
    assert (adds == 2).mean() == pytest.approx(0.222, abs=0.01)
    assert adds.min() >= 1 and adds.max() <= 500
    trades = draws(lambda rng, b: flow.size_draw(rng, b, tables.trade_size))
    assert (trades > 10).mean() == pytest.approx(0.031, abs=0.005)


def test_add_offsets_join_the_touch_mostly_with_a_far_tail() -> None:
    offsets = draws(lambda rng, b: flow.add_offset_draw(rng, b, FlowParams().compiled().offset))
    assert (offsets == 0).mean() == pytest.approx(0.539, abs=0.015)
    assert (offsets == -1).mean() == pytest.approx(0.035, abs=0.005)
    far = offsets[offsets >= flow.FAR_OFFSET_TICKS]
    assert len(far) / N == pytest.approx(flow.POOL_SHARES[flow.FAR_POOL], abs=0.015)
    assert far.max() <= 400 and 40 <= np.median(far) <= 60


def test_timing_distributions() -> None:
    gaps = draws(lambda rng, b: flow.gap_draw(rng, b, FlowParams().compiled().gap))
    assert gaps.min() >= flow.GAP_MIN_NS and gaps.max() <= flow.GAP_MAX_NS
    p10, p50, p90 = np.percentile(gaps, [10, 50, 90])
    assert 500 < p10 < 3_000 and 100_000 < p50 < 500_000 and 50e6 < p90 < 500e6
    latency = draws(flow.latency_draw)
    assert latency.min() >= 50_000 and latency.max() <= 50_050_000
    assert 170_000 < np.median(latency) < 230_000  # 50 + 150 us; ~370 us after queueing
    delta = draws(flow.in_delta_draw)
    assert delta.min() >= 9_000 and 12_000 < np.median(delta) < 17_000  # CLX5: 14.4 us
    steps = draws(flow.id_step_draw)
    assert steps.min() >= 1 and steps.mean() == pytest.approx(4.0, abs=0.2)


def test_fair_values_do_not_depend_on_how_they_are_asked_for() -> None:
    start, second = 1_000 * 10**9, 10**9
    one = FairValues([100.0, 5.0], start, 0.5, seed=3)
    whole, first = one.covering(start, start + 50 * second)
    other = FairValues([100.0, 5.0], start, 0.5, seed=3)
    for k in range(0, 43, 7):  # windows inside the first 50 steps
        part, part_first = other.covering(start + k * second, start + (k + 7) * second)
        n = part.shape[1]
        assert np.array_equal(part, whole[:, part_first - first : part_first - first + n])
    assert whole[0, 0] == 100.0 and whole[1, 0] == 5.0
    assert np.std(np.diff(whole[0])) == pytest.approx(0.5, rel=0.4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"add_weight": 0.0},
        {"cancel_weight": -1.0},
        {"target_far_orders": 0},
        {"clear_probability": 1.5},
        {"modify_price_probability": 0.9, "modify_size_down_probability": 0.2},
        {"fair_volatility_ticks": -0.1},
    ],
)
def test_flow_params_reject_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|> 1"):
        FlowParams(**kwargs)


def test_compiled_tables_are_cumulative_distributions() -> None:
    tables = FlowParams().compiled()
    for table in (tables.offset, tables.add_size, tables.trade_size, tables.through, tables.move):
        cdf = table[1]
        assert (np.diff(cdf) > 0).all() and 0.0 < cdf[-1] <= 1.0
    assert tables.through[1, -1] == 1.0 and tables.move[1, -1] == 1.0
    assert tables.gap[:, 0].sum() == pytest.approx(1.0)
    assert sum(flow.POOL_SHARES) == pytest.approx(1.0)
