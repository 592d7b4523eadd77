"""The fault harness at test size: kill -9s and a stop during a replay, then an exact check."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faults import harness

pytestmark = pytest.mark.integration


def test_kills_of_every_stage_and_a_stop_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    result = harness(
        tmp_path, records=60_000, instruments=3, workers=2, rate=4_000, kills=4, stop_s=2.0,
        seed=11,
    )  # fmt: skip
    faults = result["faults"]
    assert faults["kills"] == 4 and faults["stop"] is not None
    assert result["exact"], result["checked"]
    checked = result["checked"]
    assert checked["records"]["stored"] == 60_000
    assert checked["bbo"]["rows_differing"] == 0 and checked["bbo"]["stored"] > 0
    assert sum(result["restarts"].values()) >= 4 - faults["recoveries_unseen"]
