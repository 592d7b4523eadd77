"""`mbo produce` as a user runs it: options, summary, signals, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mbo_cli.produce import produce
from mbo_core.errors import InputError
from mbo_core.settings import ENV_PREFIX, Settings
from tests.conftest import make_settings
from tests.paths import CLX5
from tests.producer.reading import check_chunks, file_records, read_topic

COMMAND_TIMEOUT_S = 120
#: The chunk bound `mbo produce` uses when nothing sets MBO_PIPELINE__CHUNK_RECORDS.
DEFAULT_CHUNK = make_settings().pipeline.chunk_records


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "mbo_cli.main", "produce", *map(str, args)]


def environment(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """The caller's environment without MBO_ variables, pointing at this test's broker/topics."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    env.update(
        MBO_KAFKA__BOOTSTRAP_SERVERS=str(settings.kafka.bootstrap_servers),
        MBO_TOPICS__RECORDS__NAME=settings.topics.records.name,
        MBO_TOPICS__BBO__NAME=settings.topics.bbo.name,
        MBO_TOPICS__SNAPSHOTS__NAME=settings.topics.snapshots.name,
        MBO_TOPICS__DEAD_LETTER__NAME=settings.topics.dead_letter.name,
        MBO_DATA_DIR=str(tmp_path / "data"),
    )
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=env,
        cwd=cwd,  # no .env of the checkout
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


@pytest.mark.integration
def test_produce_replays_the_file_and_writes_the_summary(
    infra_settings: Settings, tmp_path: Path
) -> None:
    summary_path = tmp_path / "summary.json"
    result = run(
        command(CLX5, "--max", "--loop", "2", "--summary", summary_path, "--metrics-port", "0"),
        environment(infra_settings, tmp_path),
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["records_sent"] == 2 * 38_212 + 1
    assert (summary["clears"], summary["interrupted"], summary["mode"]) == (1, False, "max")
    assert summary["messages_by_instrument"] == {"432669": summary["messages"]}
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("mbo produce: done: 76,425 records in ")
    assert "records/s" in last_line
    assert "replay started" in result.stderr  # the log line
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["summary.json"]

    messages = read_topic(infra_settings)
    check_chunks(messages, DEFAULT_CHUNK)
    assert sum(len(m.value) for m in messages) == (2 * 38_212 + 1) * 56


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_cleanly_with_a_summary(
    infra_settings: Settings, tmp_path: Path, signum: signal.Signals
) -> None:
    summary_path = tmp_path / "summary.json"
    # Slow enough (about 8 s for the file) that the signal arrives mid-replay.
    process = subprocess.Popen(
        command(CLX5, "--rate", "5000", "--summary", summary_path, "--metrics-port", "0"),
        env=environment(infra_settings, tmp_path),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "replay started" in line:
                break
        time.sleep(0.5)  # some records on their way (any amount would do)
        process.send_signal(signum)
        _, rest = process.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "mbo produce: interrupted: " in rest
    summary = json.loads(summary_path.read_text())
    assert summary["interrupted"] is True
    assert summary["end_of_stream_markers"] == 0
    assert summary["records_read"] < 38_212

    if summary["messages"]:
        messages = read_topic(infra_settings, messages=summary["messages"])
        assert not any(m.end_of_stream for m in messages)
        check_chunks(messages, DEFAULT_CHUNK)
        sent = b"".join(m.value for m in messages)
        assert sent == file_records(CLX5)[: summary["records_sent"]].tobytes()


def test_bad_options_are_one_line_and_exit_code_2(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    result = run(command(CLX5, "--loop", "0"), env, tmp_path)
    assert result.returncode == 2
    assert result.stderr == "mbo: error: --loop must be at least 1 (copies of the file), not 0\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "--rate must be a number of records per second > 0, not 0.0"),
        (["--speed", "-2"], "--speed must be a multiple of real time > 0, not -2.0"),
        (
            ["--rate", "10", "--max"],
            "choose one of --rate, --speed and --max, not --rate and --max",
        ),
        (["--rate", "10", "--speed", "1"], "choose one of --rate, --speed and --max"),
        (["--loop", "-1"], "--loop must be at least 1"),
        (["--metrics-port", "70000"], "--metrics-port must be 0 (off) or a port number"),
    ],
)
def test_bad_options_are_input_errors(args: list[str], message: str) -> None:
    app = typer.Typer()
    app.command()(produce)
    # Each fails before settings are read or anything connects.
    result = CliRunner().invoke(app, [str(CLX5), *args])
    assert isinstance(result.exception, InputError), result.output
    assert str(result.exception).startswith(message)


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(produce)
    result = CliRunner().invoke(app, [str(tmp_path / "nope.dbn")])
    assert isinstance(result.exception, InputError)
    assert "no such file" in str(result.exception)
