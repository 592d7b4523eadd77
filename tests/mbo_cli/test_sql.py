"""`mbo sql` as a user runs it: the SQL of docs/storage.md as written, parameters, exact times."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from mbo_cli.report import _clickhouse_counts, running_counts
from mbo_cli.sql import api_address
from mbo_core.kafka.probes import free_port
from mbo_core.settings import load_settings
from tests.api.pipeline import wait_until
from tests.paths import CLX5, MBO, REPO

START_NS = 1_758_742_200_000_860_311  # CLX5's first event (2025-09-24T19:30:00.000860311Z)
PARAMS = {
    "instrument_id": "432669",
    "at_ns": str(START_NS + 600 * 10**9),
    "start_ns": str(START_NS),
    "end_ns": str(START_NS + 3600 * 10**9),
    "step_ns": str(60 * 10**9),
}


TIMES = (
    "SELECT ts_event, toDateTime(ts_event) AS second, toUnixTimestamp64Nano(ts_event) AS ns "
    "FROM bbo FINAL WHERE instrument_id = {id:UInt32} ORDER BY ts_event LIMIT {n:UInt32}"
)


def mbo_sql(
    data: Path, query: str, *params: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [arg for p in params for arg in ("--param", p)]
    return subprocess.run(
        [MBO, "sql", query, "--data-dir", str(data), *args],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip


def example_params(query: str) -> list[str]:
    return [f"{name}={PARAMS[name]}" for name in sorted(set(re.findall(r"\{(\w+):\w+\}", query)))]


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
        done = mbo_sql(clx5_data, query, *example_params(query))
        assert done.returncode == 0, (query, done.stderr)
        assert done.stdout.strip(), f"no rows from:\n{query}"


@pytest.mark.integration
def test_timestamps_are_exact_iso_8601_utc(clx5_data: Path) -> None:
    done = mbo_sql(clx5_data, TIMES, "id=432669", "n=1")
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


@pytest.mark.integration
def test_while_a_run_holds_the_data_dir_the_query_goes_through_its_api(tmp_path: Path) -> None:
    """The same lines from the running pipeline's API (found through the port the run wrote:
    MBO_API__PORT is the run's only) as from the data directory after the run."""
    data = tmp_path / "data"
    log = tmp_path / "run.log"
    port = free_port()
    run_env = {**os.environ, "MBO_API__PORT": str(port)}
    with log.open("wb") as out:
        run = subprocess.Popen(
            [MBO, "run", "--replay", str(CLX5), "--data-dir", str(data)],
            stdout=out, stderr=subprocess.STDOUT, env=run_env,
        )  # fmt: skip
    queries = [(query, example_params(query)) for query in storage_examples()]
    queries.append((TIMES, ["id=432669", "n=5"]))
    try:
        wait_until(lambda: b"replay finished" in log.read_bytes() or run.poll() is not None,
                   300, "the run's replay to finish")  # fmt: skip
        assert run.poll() is None, log.read_text()
        during = [mbo_sql(data, query, *params) for query, params in queries]
        refused = mbo_sql(data, "DROP TABLE bbo")
        # The report's counts, asked of the run's API before its stages stop.
        counted = running_counts(load_settings(data_dir=data), api_address("0.0.0.0", port))
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=120)
    for done in during:
        assert done.returncode == 0 and done.stdout.strip(), done.stderr
    assert refused.returncode == 2
    assert refused.stderr.startswith("mbo: error: query failed: Code: 164. DB::Exception:")
    assert "readonly" in refused.stderr and refused.stderr.count("\n") == 1
    after = [mbo_sql(data, query, *params) for query, params in queries]
    assert counted == _clickhouse_counts(load_settings(data_dir=data))
    assert counted is not None and counted[0]["mbo_records"] == 38_212
    assert running_counts(load_settings(data_dir=data), api_address("", free_port())) is None
    # Line for line (sorted: the row counts' UNION ALL comes in either order).
    assert [sorted(done.stdout.splitlines()) for done in during] == [
        sorted(done.stdout.splitlines()) for done in after
    ]


def test_a_held_data_dir_without_an_api_is_a_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "clickhouse").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, clickhouse_connect\n"
         f"c = clickhouse_connect.get_client(dsn='chdb://{data / 'clickhouse'}')\n"
         "print('open', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        port = free_port()
        done = mbo_sql(data, "SELECT 1", env={**os.environ, "MBO_API__PORT": str(port)})
    finally:
        holder.communicate(b"", timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"mbo: error: {data / 'clickhouse'} is open in process ")
    assert f"no mbo API answers at http://127.0.0.1:{port}" in done.stderr
    assert done.stderr.count("\n") == 1
