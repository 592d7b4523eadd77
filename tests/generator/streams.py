"""Generated streams shared by the generator tests (each generated once per process)."""

from __future__ import annotations

import functools

import numpy as np

from generator.api import generate_records
from generator.core import GeneratorConfig
from generator.flow import FlowParams

#: Snapshots and trades far more often than the calibrated model, so that short streams exercise
#: every event shape many times; small pools empty book sides now and then.
BUSY_FLOW = FlowParams(
    clear_probability=0.01,
    trade_weight=0.2,
    target_touch_orders=4,
    target_behind_orders=8,
    target_far_orders=20,
)


@functools.cache
def stream(
    instruments: int = 3,
    publishers: int = 2,
    records: int = 60_000,
    seed: int = 11,
    busy: bool = False,
) -> np.ndarray:
    """All records of one generated stream, in stream order (read-only)."""
    config = GeneratorConfig(
        instruments=instruments,
        publishers=publishers,
        records=records,
        seed=seed,
        flow=BUSY_FLOW if busy else FlowParams(),
    )
    records_array = np.concatenate(list(generate_records(config)))
    records_array.flags.writeable = False
    return records_array


def event_bounds(records: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each event: the generator writes an event's records contiguously, so
    every F_LAST record closes the records since the previous one."""
    last = np.flatnonzero(records["flags"] & 128)
    starts = np.r_[0, last[:-1] + 1]
    return list(zip(starts.tolist(), (last + 1).tolist(), strict=True))


def actions(records: np.ndarray) -> str:
    return records["action"].tobytes().decode()
