"""`mbo sql` as a user runs it: the SQL of docs/storage.md as written, parameters, exact times."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.paths import CLX5, MBO, REPO

START_NS = 1_758_742_200_000_860_311  # CLX5's first event (2025-09-24T19:30:00.000860311Z)
PARAMS = {
    "instrument_id": "432669",
    "at_ns": str(START_NS + 600 * 10**9),
    "start_ns": str(START_NS),
    "end_ns": str(START_NS + 3600 * 10**9),
    "step_ns": str(60 * 10**9),
}


def mbo_sql(data: Path, query: str, *params: str) -> subprocess.CompletedProcess[str]:
    args = [arg for p in params for arg in ("--param", p)]
    return subprocess.run(
        [MBO, "sql", query, "--data-dir", str(data), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def clx5_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("sql") / "data"
    subprocess.run(
        [MBO, "run", "--replay", str(CLX5), "--until-drained", "--data-dir", str(data)],
        capture_output=True, timeout=300, check=True,
    )  # fmt: skip
    return data


def storage_examples() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", (REPO / "docs" / "storage.md").read_text(), re.S)


@pytest.mark.integration
def test_every_sql_example_of_the_storage_docs_runs_as_written(clx5_data: Path) -> None:
    examples = storage_examples()
    assert len(examples) >= 6
    for query in examples:
        used = set(re.findall(r"\{(\w+):\w+\}", query))
        done = mbo_sql(clx5_data, query, *(f"{name}={PARAMS[name]}" for name in sorted(used)))
        assert done.returncode == 0, (query, done.stderr)
        assert done.stdout.strip(), f"no rows from:\n{query}"


@pytest.mark.integration
def test_timestamps_are_exact_iso_8601_utc(clx5_data: Path) -> None:
    done = mbo_sql(
        clx5_data,
        "SELECT ts_event, toDateTime(ts_event) AS second, toUnixTimestamp64Nano(ts_event) AS ns "
        "FROM bbo FINAL WHERE instrument_id = {id:UInt32} ORDER BY ts_event LIMIT 1",
        "id=432669",
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {
        "ts_event": "2025-09-24T19:30:00.000860311Z",
        "second": "2025-09-24T19:30:00Z",
        "ns": START_NS,
    }


def test_a_data_dir_without_data_and_a_bad_param_are_one_line_errors(tmp_path: Path) -> None:
    missing = mbo_sql(tmp_path / "typo", "SELECT 1")
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("mbo: error: no ClickHouse data at ")
    assert not (tmp_path / "typo").exists()
    bad = mbo_sql(tmp_path, "SELECT {x:UInt8}", "x")
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "mbo: error: --param 'x': expected NAME=VALUE",
    )
