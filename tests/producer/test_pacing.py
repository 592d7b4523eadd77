"""When records are due: the pacing options and the pure schedules behind them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mbo_core.errors import InputError
from mbo_core.records import MBO_DTYPE
from producer.pacing import (
    UNDEF_TIMESTAMP,
    MaxPacer,
    Pacing,
    RatePacer,
    SpeedPacer,
    rate_allowance,
    speed_due_times,
)

S = 1_000_000_000
T0 = 1_758_000_000 * S


def batch(ts_recv: list[int]) -> np.ndarray:
    out = np.zeros(len(ts_recv), dtype=MBO_DTYPE)
    out["ts_recv"] = np.array(ts_recv, dtype=np.uint64)
    return out


def test_default_is_flat_out() -> None:
    assert Pacing.from_options() == Pacing("max")
    assert Pacing.from_options(max_=True) == Pacing("max")
    assert isinstance(Pacing("max").pacer(), MaxPacer)


def test_rate_and_speed() -> None:
    assert Pacing.from_options(rate=50_000) == Pacing("rate", rate=50_000.0)
    assert Pacing.from_options(speed=2.5) == Pacing("speed", speed=2.5)
    assert isinstance(Pacing.from_options(rate=1).pacer(), RatePacer)
    assert isinstance(Pacing.from_options(speed=1).pacer(), SpeedPacer)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": 0}, "--rate must be"),
        ({"rate": -5}, "--rate must be"),
        ({"rate": math.nan}, "--rate must be"),
        ({"rate": math.inf}, "--rate must be"),
        ({"speed": 0}, "--speed must be"),
        ({"speed": -1}, "--speed must be"),
        ({"rate": 1, "speed": 1}, "choose one of"),
        ({"rate": 1, "max_": True}, "choose one of"),
        ({"speed": 1, "max_": True}, "choose one of"),
    ],
)
def test_bad_pacing_options_are_input_errors(options: dict[str, float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Pacing.from_options(**options)  # type: ignore[arg-type]


def test_max_releases_everything_at_once() -> None:
    pacer = MaxPacer()
    pacer.start_batch(batch([0] * 10))
    assert pacer.due(0, 0.0) == 10


def test_rate_releases_records_as_a_token_bucket_without_burst() -> None:
    pacer = RatePacer(1000.0)
    pacer.start_batch(batch([0] * 10))
    assert pacer.due(0, 0.0) == 0
    assert pacer.next_due(0) == pytest.approx(0.001)
    assert pacer.due(0, 0.0055) == 5
    assert pacer.next_due(5) == pytest.approx(0.006)
    assert pacer.due(5, 0.0055) == 5  # never goes back
    assert pacer.due(5, 1.0) == 10  # capped at the batch
    # The count runs over batches: the next batch starts at record 10 of the run.
    pacer.start_batch(batch([0] * 10))
    assert pacer.due(0, 0.0125) == 2
    assert pacer.next_due(2) == pytest.approx(0.013)
    pacer.end_copy()  # copies do not restart the count
    assert pacer.due(2, 0.0125) == 2


@given(st.floats(1.0, 1e7), st.floats(0.0, 1e4))
def test_rate_allowance_never_exceeds_rate_times_time(rate: float, elapsed: float) -> None:
    allowed = rate_allowance(rate, elapsed)
    assert allowed <= rate * elapsed
    assert allowed > rate * elapsed - 1 - 1e-6 * rate * elapsed


def test_speed_follows_recorded_pace() -> None:
    pacer = SpeedPacer(2.0)
    pacer.start_batch(batch([T0, T0 + S, T0 + S, T0 + 3 * S]))
    assert [pacer.next_due(i) for i in range(4)] == [0.0, 0.5, 0.5, 1.5]
    assert pacer.due(0, 0.0) == 1
    assert pacer.due(1, 0.49) == 1
    assert pacer.due(1, 0.5) == 3
    # A second batch of the same copy continues the same clock.
    pacer.start_batch(batch([T0 + 4 * S]))
    assert pacer.next_due(0) == 2.0


def test_speed_copies_follow_one_another() -> None:
    pacer = SpeedPacer(1.0)
    pacer.start_batch(batch([T0, T0 + 2 * S]))
    pacer.end_copy()
    pacer.start_batch(batch([T0, T0 + 2 * S]))
    assert [pacer.next_due(0), pacer.next_due(1)] == [2.0, 4.0]
    pacer.end_copy()
    pacer.start_batch(batch([T0 + S]))  # a copy's own first record sets its origin
    assert pacer.next_due(0) == 4.0


def test_speed_never_schedules_a_record_before_the_one_in_front_of_it() -> None:
    undefined = int(UNDEF_TIMESTAMP)
    due = speed_due_times(
        np.array([T0, T0 + 2 * S, T0 + S, undefined, T0 + 3 * S], dtype=np.uint64),
        first_ts=T0,
        carry_ts=T0,
        offset_ns=0,
        speed=1.0,
    )
    assert due.tolist() == [0.0, 2.0, 2.0, 2.0, 3.0]
    # A batch that starts below the copy's latest timestamp so far.
    later = speed_due_times(
        np.array([T0 + S, T0 + 5 * S], dtype=np.uint64),
        first_ts=T0,
        carry_ts=T0 + 3 * S,
        offset_ns=10 * S,
        speed=2.0,
    )
    assert later.tolist() == [6.5, 7.5]


def test_pacers_refuse_non_positive_values() -> None:
    with pytest.raises(ValueError, match="rate"):
        RatePacer(0)
    with pytest.raises(ValueError, match="speed"):
        SpeedPacer(-1)
