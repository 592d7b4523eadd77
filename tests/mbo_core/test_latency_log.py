"""The processors' latency log: what one writes, the report reads back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mbo_core.latency_log import LatencyLog, read_stamps, run_latency_dir


def read_latencies(directory: Path) -> np.ndarray:
    """processed - sent of every logged pair, as the report computes them."""
    stamps = read_stamps(directory)
    latencies: np.ndarray = stamps[:, 1] - stamps[:, 0]
    return latencies


def test_logged_pairs_read_back_as_latencies_in_order(tmp_path: Path) -> None:
    log = LatencyLog(tmp_path / "latency")
    log.add(1_000, 1_250)
    log.add(2_000, 2_010)
    assert read_latencies(tmp_path / "latency").tolist() == []  # nothing flushed yet
    log.flush()
    log.add(3_000, 3_500)
    log.flush()
    log.flush()  # nothing new: nothing written
    assert read_latencies(tmp_path / "latency").tolist() == [250, 10, 500]
    assert log.path.stat().st_size == 3 * 16


def test_a_full_buffer_is_flushed_and_every_file_of_the_directory_counts(tmp_path: Path) -> None:
    log = LatencyLog(tmp_path)
    for i in range(LatencyLog.FLUSH_PAIRS):
        log.add(i, i + 7)
    assert log.path.stat().st_size == LatencyLog.FLUSH_PAIRS * 16
    other = tmp_path / "processor-1.bin"
    other.write_bytes(np.array([10, 40, 99], dtype="<i8").tobytes())  # a torn last pair
    latencies = read_latencies(tmp_path)
    assert len(latencies) == LatencyLog.FLUSH_PAIRS + 1
    assert sorted(set(latencies.tolist())) == [7, 30]


def test_no_log_reads_as_no_latencies(tmp_path: Path) -> None:
    assert read_latencies(run_latency_dir(tmp_path)).tolist() == []
    assert run_latency_dir(tmp_path) == tmp_path / "latency"


def test_stamps_read_back_as_pairs(tmp_path: Path) -> None:
    log = LatencyLog(tmp_path)
    log.add(5, 9)
    log.add(6, 7)
    log.flush()
    assert read_stamps(tmp_path).tolist() == [[5, 9], [6, 7]]
    assert read_stamps(tmp_path / "none").shape == (0, 2)
