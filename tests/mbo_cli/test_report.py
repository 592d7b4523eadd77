"""mbo_cli.report without a run: the latency figures from the processors' stamps."""

from __future__ import annotations

from pathlib import Path

from mbo_cli.report import _event_latencies
from mbo_core.latency_log import LatencyLog, run_latency_dir


def test_latencies_of_every_message_and_of_those_sent_after_the_first_second(
    tmp_path: Path,
) -> None:
    assert _event_latencies(tmp_path) == {"count": 0}
    log = LatencyLog(run_latency_dir(tmp_path))
    start = 1_000_000_000_000
    log.add(start, start + 40_000_000)  # 40 ms, while the broker is cold
    log.add(start + 500_000_000, start + 520_000_000)  # 20 ms
    log.add(start + 1_500_000_000, start + 1_502_000_000)  # 2 ms
    log.add(start + 2_000_000_000, start + 2_004_000_000)  # 4 ms
    log.flush()
    figures = _event_latencies(tmp_path)
    assert (figures["count"], figures["max"]) == (4, 40.0)
    assert figures["after_first_second"]["count"] == 2
    assert figures["after_first_second"]["max"] == 4.0
