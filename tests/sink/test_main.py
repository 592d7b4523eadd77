"""`mbo sink`: options, errors, and a real run through the command."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from mbo_cli.main import app
from mbo_core.kafka.topics import ensure_topics
from mbo_core.settings import Settings
from tests.sink.wire import clx5_records, event_chunks, produce_records

COMMAND_TIMEOUT_S = 60


def _python_m_sink(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mbo_cli.main", "sink", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])},
    )


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    result = _python_m_sink("--idle-exit", "-1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "mbo: error: --idle-exit must be a positive number of seconds, not -1.0\n"
    )
    result = _python_m_sink("--metrics-port", "70000", cwd=tmp_path)
    assert result.returncode == 2
    assert "--metrics-port must be 0 (off) or a port number" in result.stderr


@pytest.fixture
def restore_logging() -> Iterator[None]:
    # The command configures the root logger for its process; give pytest's back afterwards.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.integration
def test_the_command_loads_the_topics_and_prints_a_summary(
    infra_settings: Settings,
    clickhouse_client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
) -> None:
    asyncio.run(ensure_topics(infra_settings))
    chunks = event_chunks(clx5_records(), 1000)[:3]
    produce_records(infra_settings, chunks)
    s = infra_settings
    env = {
        "MBO_DATA_DIR": str(tmp_path / "data"),
        "MBO_KAFKA__BOOTSTRAP_SERVERS": str(s.kafka.bootstrap_servers),
        "MBO_KAFKA__SINK_GROUP_ID": s.kafka.sink_group_id,
        "MBO_TOPICS__RECORDS__NAME": s.topics.records.name,
        "MBO_TOPICS__BBO__NAME": s.topics.bbo.name,
        "MBO_TOPICS__SNAPSHOTS__NAME": s.topics.snapshots.name,
        "MBO_TOPICS__DEAD_LETTER__NAME": s.topics.dead_letter.name,
        "MBO_CLICKHOUSE__URL": s.clickhouse_url,
        "MBO_CLICKHOUSE__DATABASE": s.clickhouse.database,
        "MBO_CLICKHOUSE__USERNAME": s.clickhouse.username,
        "MBO_CLICKHOUSE__PASSWORD": s.clickhouse.password.get_secret_value(),
        "MBO_LOG__FORMAT": "json",
    }
    monkeypatch.chdir(tmp_path)  # no stray .env
    # In process: with chDB only this process may open the session's engine.
    result = CliRunner().invoke(app, ["sink", "--idle-exit", "1.5", "--metrics-port", "0"], env=env)
    assert result.exit_code == 0, result.output
    records = sum(len(chunk) for chunk in chunks)
    assert (
        f"mbo sink: 4 messages, {records:,} MBO records, 0 BBO rows, 0 snapshots in"
        in result.stderr
    )
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {entry["stage"] for entry in logged} == {"sink"}
    assert any(entry["msg"].startswith("sink consuming") for entry in logged)
    counted = clickhouse_client.query("SELECT count() FROM mbo_records FINAL").result_rows
    assert counted == [(records,)]
