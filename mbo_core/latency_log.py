"""Per-message send -> publish latency, as files the book processor appends to.

Why: `mbo run`'s report used to read every BBO and snapshot message back from the broker to
get the two stamps in their headers (sent-ns, processed-ns): a 2M-record run re-read ~200 MB
through aiokafka after the drain, 1.3 CPU-s of `mbo run` and 0.7 of the broker's. The processor
has both stamps in hand when it publishes, so it writes them down instead.

Format: a directory of `processor-<pid>.bin` files, each a sequence of little-endian int64
pairs (sent_ns, processed_ns), one pair per published BBO or snapshot message, in publishing
order. A writer appends whole pairs only. A worker killed with -9 loses the pairs of its last
flush interval (at most `LatencyLog.FLUSH_PAIRS` or one second of them).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PAIR_DTYPE = np.dtype("<i8")


class LatencyLog:
    """Buffers (sent_ns, processed_ns) pairs and appends them to its file on flush()."""

    FLUSH_PAIRS = 65_536

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"processor-{os.getpid()}.bin"
        self._pairs: list[int] = []

    def add(self, sent_ns: int, processed_ns: int) -> None:
        self._pairs += (sent_ns, processed_ns)
        if len(self._pairs) >= 2 * self.FLUSH_PAIRS:
            self.flush()

    def flush(self) -> None:
        if not self._pairs:
            return
        data = np.array(self._pairs, dtype=PAIR_DTYPE).tobytes()
        self._pairs.clear()
        with self.path.open("ab") as out:
            out.write(data)


def run_latency_dir(run_dir: Path) -> Path:
    """Where the processors of a `mbo run` (its run directory) log their stamps."""
    return run_dir / "latency"


def read_stamps(directory: Path) -> np.ndarray:
    """Every logged (sent_ns, processed_ns) pair in the directory, as an (n, 2) int64 array."""
    parts = []
    for path in sorted(directory.glob("processor-*.bin")):
        values = np.fromfile(path, dtype=PAIR_DTYPE)
        parts.append(values[: len(values) // 2 * 2].reshape(-1, 2))  # a torn last pair is left out
    return np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.int64)
