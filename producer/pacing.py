"""When each record of a replay is due: flat out, at a fixed rate, or at a multiple of real time.

Pure: pacers take the elapsed time since the start of the replay (seconds) from the caller and
say how far into the current batch of records the replay may go, and when the next record is
due. The producer turns that into ~1 ms time slices (see producer.app).

* `--max`: everything is due at once.
* `--rate R`: a token bucket over the whole run without burst: at elapsed time t, at most
  floor(R * t) records have been released, so the rate holds over any stretch of the run.
* `--speed X`: a record is due at (ts_recv - first ts_recv) / X after the start. ts_recv is
  made non-decreasing first (a record is never due before the one in front of it, so order is
  kept). Each further copy of a looped file continues the timeline where the previous copy ended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from mbo_core.errors import InputError

Mode = Literal["max", "rate", "speed"]

#: DBN's "no timestamp" (u64 max); such a ts_recv takes the pace of the records before it.
UNDEF_TIMESTAMP = np.uint64(2**64 - 1)
_NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Pacing:
    """How fast to replay: exactly one of max, rate (records/s) and speed (x real time)."""

    mode: Mode = "max"
    rate: float | None = None
    speed: float | None = None

    @classmethod
    def from_options(
        cls, *, rate: float | None = None, speed: float | None = None, max_: bool = False
    ) -> Pacing:
        """Validated pacing; InputError names the bad option. No option at all means max."""
        given = {"--rate": rate is not None, "--speed": speed is not None, "--max": max_}
        chosen = [name for name, present in given.items() if present]
        if len(chosen) > 1:
            raise InputError(f"choose one of --rate, --speed and --max, not {' and '.join(chosen)}")
        if rate is not None:
            if not math.isfinite(rate) or rate <= 0:
                raise InputError(f"--rate must be a number of records per second > 0, not {rate}")
            return cls("rate", rate=float(rate))
        if speed is not None:
            if not math.isfinite(speed) or speed <= 0:
                raise InputError(f"--speed must be a multiple of real time > 0, not {speed}")
            return cls("speed", speed=float(speed))
        return cls("max")

    @classmethod
    def validate(
        cls, *, rate: float | None, speed: float | None, loops: int, max_: bool = False
    ) -> Pacing:
        """`from_options`, and loops (copies of the file) must be at least 1."""
        pacing = cls.from_options(rate=rate, speed=speed, max_=max_)
        if loops < 1:
            raise InputError(f"--loop must be at least 1 (copies of the file), not {loops}")
        return pacing

    def pacer(self) -> Pacer:
        if self.mode == "rate" and self.rate is not None:
            return RatePacer(self.rate)
        if self.mode == "speed" and self.speed is not None:
            return SpeedPacer(self.speed)
        return MaxPacer()

    def describe(self) -> str:
        if self.mode == "rate":
            return f"{self.rate:,.0f} records/s"
        if self.mode == "speed":
            return f"{self.speed:g}x recorded pace"
        return "flat out"


class Pacer(Protocol):
    """Paces one replay. Call `start_batch` for each batch of records in stream order,
    `end_copy` after the last batch of each copy of the file."""

    def start_batch(self, batch: np.ndarray) -> None: ...

    def due(self, position: int, elapsed: float) -> int:
        """How many records of the current batch are due at `elapsed` (>= position)."""
        ...

    def next_due(self, position: int) -> float:
        """Elapsed time at which record `position` of the current batch is due."""
        ...

    def end_copy(self) -> None: ...


class MaxPacer:
    """Everything is due now."""

    def __init__(self) -> None:
        self._size = 0

    def start_batch(self, batch: np.ndarray) -> None:
        self._size = len(batch)

    def due(self, position: int, elapsed: float) -> int:
        return self._size

    def next_due(self, position: int) -> float:
        return 0.0

    def end_copy(self) -> None:
        pass


def rate_allowance(rate: float, elapsed: float) -> int:
    """Records a token bucket of `rate` records/s without burst lets through by `elapsed` s."""
    return max(0, math.floor(rate * elapsed))


class RatePacer:
    """`rate` records per second, counted over the whole run (all batches, all copies)."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, not {rate}")
        self.rate = rate
        self._before = 0  # records of the batches before the current one
        self._size = 0

    def start_batch(self, batch: np.ndarray) -> None:
        self._before += self._size
        self._size = len(batch)

    def due(self, position: int, elapsed: float) -> int:
        allowed = rate_allowance(self.rate, elapsed) - self._before
        return min(self._size, max(position, allowed))

    def next_due(self, position: int) -> float:
        # Record number k (0-based) of the run is due once floor(rate * t) > k.
        return (self._before + position + 1) / self.rate

    def end_copy(self) -> None:
        pass


def speed_due_times(
    ts_recv: np.ndarray, *, first_ts: int, carry_ts: int, offset_ns: int, speed: float
) -> np.ndarray:
    """Elapsed seconds at which each record is due at `speed` x its recorded pace.

    first_ts: ts_recv of the copy's first record; carry_ts: the largest ts_recv before this
    batch in the copy (first_ts for the first batch); offset_ns: recorded time of the copies
    before this one. Undefined timestamps and steps back in ts_recv take the pace of the
    record before, so due times never decrease.
    """
    ts = np.where(ts_recv == UNDEF_TIMESTAMP, np.uint64(0), ts_recv)
    ts = np.maximum.accumulate(np.maximum(ts, np.uint64(carry_ts)))
    recorded_ns = (ts - np.uint64(first_ts)).astype(np.float64) + offset_ns
    due: np.ndarray = recorded_ns / (speed * _NS_PER_S)
    return due


class SpeedPacer:
    """`speed` times the recorded ts_recv pace; copies of a looped file follow one another."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, not {speed}")
        self.speed = speed
        self._first_ts: int | None = None  # of the current copy
        self._carry_ts = 0  # largest ts_recv seen in the current copy
        self._offset_ns = 0  # recorded time of the finished copies
        self._due = np.empty(0, dtype=np.float64)

    def start_batch(self, batch: np.ndarray) -> None:
        if not len(batch):
            self._due = np.empty(0, dtype=np.float64)
            return
        ts_recv = batch["ts_recv"]
        if self._first_ts is None:
            defined = ts_recv[ts_recv != UNDEF_TIMESTAMP]
            self._first_ts = int(defined[0]) if len(defined) else 0
            self._carry_ts = self._first_ts
        self._due = speed_due_times(
            ts_recv,
            first_ts=self._first_ts,
            carry_ts=self._carry_ts,
            offset_ns=self._offset_ns,
            speed=self.speed,
        )
        defined = ts_recv[ts_recv != UNDEF_TIMESTAMP]
        if len(defined):
            self._carry_ts = max(self._carry_ts, int(defined.max()))

    def due(self, position: int, elapsed: float) -> int:
        return max(position, int(np.searchsorted(self._due, elapsed, side="right")))

    def next_due(self, position: int) -> float:
        return float(self._due[position])

    def end_copy(self) -> None:
        if self._first_ts is not None:
            self._offset_ns += self._carry_ts - self._first_ts
        self._first_ts = None
        self._carry_ts = 0
