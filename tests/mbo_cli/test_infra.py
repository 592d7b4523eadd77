"""`mbo infra up / status / down` through the real console script, as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mbo_core.kafka import broker, probes
from mbo_core.settings import ENV_PREFIX
from tests.conftest import make_settings

pytestmark = pytest.mark.integration

MBO = Path(sys.executable).with_name("mbo")
COMMAND_TIMEOUT_S = 120


def _env(**values: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    env.update(values)
    return env


def _mbo(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MBO), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "data"
    yield directory
    # Whatever happened above, leave no broker behind.
    broker.stop_broker(make_settings(data_dir=directory))


def test_up_status_down(data_dir: Path, tmp_path: Path) -> None:
    env = _env(MBO_DATA_DIR=str(data_dir))

    up = _mbo("infra", "up", cwd=tmp_path, env=env)
    assert up.returncode == 0, up.stderr
    servers = re.search(r"export MBO_KAFKA__BOOTSTRAP_SERVERS=(127\.0\.0\.1):(\d+)", up.stdout)
    assert servers, up.stdout
    host, port = servers.group(1), int(servers.group(2))
    assert f"export MBO_CLICKHOUSE__URL=chdb://{data_dir}/clickhouse" in up.stdout
    for topic in ("mbo.records", "mbo.bbo", "mbo.snapshots"):
        assert f"topic {topic}: 8 partitions, created" in up.stdout
    assert "topic mbo.dead-letter: 1 partition, created" in up.stdout
    assert "applied now: 0001_initial.sql" in up.stdout
    # `up` returned, and the broker it started detached still serves Kafka.
    assert probes.kafka_answers(host, port)

    status = _mbo("infra", "status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    assert f"{host}:{port}" in status.stdout
    assert "running" in status.stdout
    state = broker.read_state(make_settings(data_dir=data_dir))
    assert state is not None

    down = _mbo("infra", "down", cwd=tmp_path, env=env)
    assert down.returncode == 0, down.stderr
    assert f"stopped the local broker at {host}:{port}" in down.stdout
    for listening in (port, state.controller_port):
        assert not probes.port_open(host, listening), "a port still listens after `infra down`"
    after = broker.broker_status(make_settings(data_dir=data_dir))
    assert after.state is None
    assert not after.running

    # The data outlives the broker: a new `up` finds the topics it made.
    again = _mbo("infra", "up", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert "topic mbo.records: 8 partitions, exists" in again.stdout
    assert f"export MBO_KAFKA__BOOTSTRAP_SERVERS={host}:{port}" in again.stdout  # same port
    assert _mbo("infra", "down", cwd=tmp_path, env=env).returncode == 0


def test_bad_setting_fails_fast_with_one_readable_line(tmp_path: Path) -> None:
    env = _env(MBO_DATA_DIR=str(tmp_path / "data"), MBO_KAFKA__SESSION_TIMEOUT_MS="soon")
    result = _mbo("infra", "up", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "mbo: error: invalid settings: MBO_KAFKA__SESSION_TIMEOUT_MS='soon': Input should be a "
        "valid integer, unable to parse string as an integer"
    ]
    assert not (tmp_path / "data" / "broker" / "state.json").exists()


def test_init_provisions_configured_servers_and_exits(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """`mbo infra init` (the one-shot init container): topics and schema, twice, no broker."""
    data_dir = tmp_path / "data"
    env = _env(
        MBO_DATA_DIR=str(data_dir),
        MBO_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        MBO_TOPICS__RECORDS__NAME=f"{unique_prefix}.records",
        MBO_TOPICS__BBO__NAME=f"{unique_prefix}.bbo",
        MBO_TOPICS__SNAPSHOTS__NAME=f"{unique_prefix}.snapshots",
        MBO_TOPICS__DEAD_LETTER__NAME=f"{unique_prefix}.dead-letter",
        # Its own chDB directory: the session's may be open in this process.
        MBO_CLICKHOUSE__URL=f"chdb://{tmp_path / 'clickhouse'}",
    )
    first = _mbo("infra", "init", "--wait", "0", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    for topic in ("records", "bbo", "snapshots"):
        assert f"topic {unique_prefix}.{topic}: 8 partitions, created" in first.stdout
    assert "applied now: 0001_initial.sql" in first.stdout
    again = _mbo("infra", "init", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert f"topic {unique_prefix}.records: 8 partitions, exists" in again.stdout
    assert "applied now: none needed" in again.stdout
    assert not broker.state_file(make_settings(data_dir=data_dir)).exists()


def test_init_refuses_to_run_without_kafka_servers(tmp_path: Path) -> None:
    env = _env(MBO_DATA_DIR=str(tmp_path / "data"))
    result = _mbo("infra", "init", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "set MBO_KAFKA__BOOTSTRAP_SERVERS" in result.stderr
    assert not (tmp_path / "data" / "broker" / "state.json").exists()


def test_init_gives_up_when_kafka_does_not_answer(tmp_path: Path) -> None:
    port = probes.free_port("127.0.0.1")
    env = _env(
        MBO_DATA_DIR=str(tmp_path / "data"),
        MBO_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
        MBO_KAFKA__REQUEST_TIMEOUT_MS="3000",
        MBO_KAFKA__SESSION_TIMEOUT_MS="2000",
        MBO_CLICKHOUSE__URL=f"chdb://{tmp_path / 'clickhouse'}",
    )
    result = _mbo("infra", "init", "--wait", "1", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert "mbo: error: infra init gave up after" in result.stderr
    assert "cannot reach Kafka" in result.stderr
