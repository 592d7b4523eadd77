"""`mbo run --live`, `mbo produce --live` and `mbo run --historical` through the installed
console script, against the fake Databento gateways on loopback (tests/databento_fakes.py):
no internet, no real key. What ClickHouse holds is checked against the offline books of the
same records (tests/offline.py), as tests/mbo_cli/test_run.py does for file replays.

A live run is stopped as a person stops it, with SIGINT, once the fake has sent everything and
the producer has had it acknowledged (its /metrics): it then sends the end-of-stream markers,
the pipeline drains, and the run writes its report and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from prometheus_client.parser import text_string_to_metric_families

from mbo_core.dbn import open_mbo
from mbo_core.settings import Settings
from producer.chunking import F_LAST
from tests.databento_fakes import (
    CLX5_ID,
    RANGE_PATH,
    FakeHistorical,
    FakeLive,
    LivePlan,
    make_certificate,
    mbo_snapshot,
)
from tests.offline import assert_final_books, offline, sql, stored_bbo
from tests.paths import CLX5, MBO

pytestmark = pytest.mark.integration

KEY = "db-TESTKEYabcdefghijklmnopqrstu"
LIVE = ("--live", "--dataset", "GLBX.MDP3", "--symbols", "CLX5")


@pytest.fixture(scope="module")
def records() -> np.ndarray:
    return np.concatenate(list(open_mbo(CLX5).batches()))


@pytest.fixture(scope="module")
def clx5_offline() -> tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]]:
    return offline(CLX5)


def environment(**extra: str) -> dict[str, str]:
    """This environment without anyone's MBO_ or Databento settings, plus `extra`."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("MBO_", "DATABENTO_")) and "PROXY" not in name.upper()
    }
    return environ | extra


def live_environment(fake: FakeLive, key: str | None = KEY) -> dict[str, str]:
    extra = {"MBO_DATABENTO__LIVE_GATEWAY": "127.0.0.1",
             "MBO_DATABENTO__LIVE_PORT": str(fake.port)}  # fmt: skip
    if key is not None:
        extra["DATABENTO_API_KEY"] = key
    return environment(**extra)


def dbn_file(path: Path, records: np.ndarray) -> Path:
    """`records` as a DBN file with CLX5's metadata: what `offline()` reads."""
    with open_mbo(CLX5).path.open("rb") as source:
        head = source.read(open_mbo(CLX5).body_offset)
    path.write_bytes(head + records.tobytes())
    return path


def producer_metric(data: Path, name: str, **labels: str) -> float:
    """A sample of the run's producer /metrics (its port is in <data>/run/ports.json); 0 if it
    does not answer yet."""
    try:
        port = json.loads((data / "run" / "ports.json").read_text())["producer"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except (OSError, ValueError, KeyError):
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


class LiveRun:
    """`mbo run --live ...` in the background, stopped with SIGINT."""

    def __init__(self, tmp_path: Path, fake: FakeLive, *args: str) -> None:
        self.data = tmp_path / "data"
        self.report = tmp_path / "report.json"
        self.process = subprocess.Popen(
            [MBO, "run", *LIVE, *args, "--data-dir", str(self.data), "--report",
             str(self.report), "--timeout", "240"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=live_environment(fake),
        )  # fmt: skip

    def wait_sent(self, records: int, timeout: float = 180) -> None:
        """Until the producer has had `records` records acknowledged."""
        deadline = time.monotonic() + timeout
        while producer_metric(self.data, "mbo_records_out_total", stage="producer") < records:
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                pytest.fail(f"mbo run ended early ({self.process.returncode}): {err[-3000:]}")
            assert time.monotonic() < deadline, "the producer did not send everything"
            time.sleep(0.3)

    def stop(self) -> tuple[dict[str, Any], str]:
        """SIGINT; the report and stderr of the run, which must exit 0."""
        self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
            pytest.fail(f"mbo run did not stop: {err[-3000:]}")
        assert self.process.returncode == 0, err[-3000:]
        return json.loads(self.report.read_text()), err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def live_gateway() -> Iterator[list[FakeLive]]:
    """Fakes to start (appended by the test); each is stopped, and checked stopped, after it."""
    fakes: list[FakeLive] = []
    yield fakes
    for fake in fakes:
        fake.stop()
        assert not fake.running


def start_fake(fakes: list[FakeLive], *plans: LivePlan) -> FakeLive:
    fake = FakeLive(keys=frozenset({KEY}), plans=list(plans)).start()
    fakes.append(fake)
    return fake


def test_a_live_session_ends_with_clickhouse_equal_to_the_offline_books(
    tmp_path: Path,
    records: np.ndarray,
    clx5_offline: tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]],
    live_gateway: list[FakeLive],
) -> None:
    """CLX5 as an intraday replay from 19:30 (no snapshot: the file's records alone), recorded
    too; SIGINT once all is sent: every record, row for row the file's BBO, its final books."""
    fake = start_fake(live_gateway, LivePlan(records))
    recorded = tmp_path / "session.dbn.zst"
    run = LiveRun(tmp_path, fake, "--start", "2025-09-24T19:30", "--record", str(recorded))
    try:
        run.wait_sent(len(records))
        report, err = run.stop()
    finally:
        run.kill()
    rows, finals = clx5_offline
    assert "mbo run: live session stopped: 38,212 records sent; everything is in ClickHouse" in err
    assert report["records"] == report["rows"]["mbo_records"] == 38_212
    producer = report["producer"]
    assert (producer["connections"], producer["gaps"], producer["interrupted"]) == (1, 0, True)
    data = run.data
    assert stored_bbo(data) == rows  # row for row, no loss, no duplicates
    assert_final_books(data, finals)
    (run_row,) = sql(data, "SELECT DISTINCT replay_id, replay_copy FROM mbo_records")
    assert run_row["replay_id"] == producer["replay_id"] and run_row["replay_copy"] == 1
    (subscription,) = fake.started()[0].subscriptions
    assert (int(subscription.start), int(subscription.snapshot)) == (1758742200000000000, 0)
    # The recording: what `mbo book` reads, the file's book.
    book = subprocess.run([MBO, "book", str(recorded)], capture_output=True, text=True,
                          check=True, timeout=120)  # fmt: skip
    (final,) = json.loads(book.stdout)["books"]
    assert (final["bids"], final["asks"]) == (
        finals[(CLX5_ID, 1)]["bids"], finals[(CLX5_ID, 1)]["asks"],
    )  # fmt: skip
    assert KEY not in err


def test_a_dropped_connection_reconnects_and_each_run_is_exact(
    tmp_path: Path,
    records: np.ndarray,
    clx5_offline: tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]],
    live_gateway: list[FakeLive],
) -> None:
    """From a snapshot. The gateway drops connection 1 mid-event; records go missing until the
    client is back; connection 2 starts from a snapshot of the book at that point. Each
    connection is a run whose BBO rows are exactly the offline ones of its records, and the
    second run's final book, rebuilt from the snapshot, is the whole file's."""
    closes = (records["flags"] & F_LAST) != 0
    cut = 15_000 + int(np.argmax(~closes[14_999:]))  # mid-event
    resumed = 20_000 + int(np.argmax(closes[19_999:]))  # the first event after the gap
    at = records["ts_recv"]
    first = np.concatenate([mbo_snapshot(records[:0], CLX5_ID, at[0]), records[:cut]])
    second = np.concatenate(
        [mbo_snapshot(records[:resumed], CLX5_ID, at[resumed]), records[resumed:]]
    )
    fake = start_fake(live_gateway, LivePlan(first, end="close"), LivePlan(second))
    run = LiveRun(tmp_path, fake)
    try:
        run.wait_sent(len(first) + len(second))
        gaps = producer_metric(run.data, "mbo_live_gaps_total", reason="closed")
        report, err = run.stop()
    finally:
        run.kill()
    assert "mbo run: live session stopped: " in err
    assert gaps == 1
    producer = report["producer"]
    assert (producer["connections"], producer["gaps"]) == (2, 1)
    assert producer["records_received"] == len(first) + len(second)
    assert producer["unterminated_records"] > 0  # connection 1's last, unclosed event
    assert [int(c.subscriptions[0].snapshot) for c in fake.started()] == [1, 1]
    replay_id = producer["replay_id"]
    counts = sql(run.data, "SELECT replay_copy, count() AS n FROM mbo_records FINAL "
                           "GROUP BY replay_copy ORDER BY replay_copy")  # fmt: skip
    assert [(r["replay_copy"], r["n"]) for r in counts] == [(1, len(first)), (2, len(second))]
    for copy, sent in ((1, first), (2, second)):
        rows, _ = offline(dbn_file(tmp_path / f"run{copy}.dbn", sent))
        assert stored_bbo(run.data, (replay_id, copy)) == rows, copy
    assert_final_books(run.data, clx5_offline[1])  # run 2's end: the whole file's book
    assert (
        "gap: connection 1 ended after" in (run.data / "run" / "logs" / "producer.log").read_text()
    )


def test_a_refused_key_or_dataset_fails_at_once_and_leaves_nothing_running(
    tmp_path: Path, records: np.ndarray, live_gateway: list[FakeLive]
) -> None:
    fake = start_fake(live_gateway, LivePlan(records[:10]))
    data = tmp_path / "data"

    def run(*args: str, key: str | None) -> str:
        done = subprocess.run(
            [MBO, "run", *args, "--data-dir", str(data)], capture_output=True, text=True,
            timeout=120, check=False, env=live_environment(fake, key),
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr  # one line
        return done.stderr.strip()

    assert run(*LIVE, key="db-WRONGKEYabcdefghijklmnopqrs") == (
        "mbo: error: Databento Live: Authentication failed."
    )
    other = ("--live", "--dataset", "XNAS.ITCH", "--symbols", "AAPL")
    assert run(*other, key=KEY) == "mbo: error: Databento Live: Unknown dataset: XNAS.ITCH"
    assert run(*LIVE, key=None).startswith("mbo: error: no Databento API key: ")
    assert run(*LIVE, "--rate", "100", key=KEY) == (
        "mbo: error: --rate is for file replays: a live session comes at the market's pace, once"
    )
    assert run(*LIVE, "--end", "2025-09-25", key=KEY) == "mbo: error: --end is for --historical"
    assert run("--dataset", "GLBX.MDP3", key=KEY) == (
        "mbo: error: choose the source: --replay FILE, --historical or --live"
    )
    assert not data.exists()  # no broker, no stage, nothing written
    assert not fake.started() and len(fake.connections) == 2  # two key checks, no session


def test_an_unknown_symbol_stops_mbo_produce_live(
    infra_settings: Settings, records: np.ndarray, live_gateway: list[FakeLive]
) -> None:
    fake = start_fake(live_gateway, LivePlan(records[:10]))
    env = live_environment(fake) | {
        "MBO_KAFKA__BOOTSTRAP_SERVERS": str(infra_settings.kafka.bootstrap_servers),
        "MBO_TOPICS__RECORDS__NAME": infra_settings.topics.records.name,
        "MBO_DATA_DIR": str(infra_settings.data_dir),
    }
    done = subprocess.run(
        [MBO, "produce", "--live", "--dataset", "GLBX.MDP3", "--symbols", "CLX5,CLZ9",
         "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == "mbo: error: Databento Live: Failed to resolve symbol: CLZ9"
    assert KEY not in done.stderr


def test_run_historical_fetches_then_replays_as_replay_does(
    tmp_path: Path,
    clx5_offline: tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]],
) -> None:
    try:
        cert, cert_key = make_certificate(tmp_path / "tls")
    except RuntimeError as exc:
        pytest.skip(str(exc))
    body = zstandard.ZstdCompressor(level=3).compress(CLX5.read_bytes())
    data, report = tmp_path / "data", tmp_path / "report.json"
    with FakeHistorical(body=body, cert=cert, cert_key=cert_key, keys=frozenset({KEY})) as fake:
        done = subprocess.run(
            [MBO, "run", "--historical", "--dataset", "GLBX.MDP3", "--symbols", "CLX5",
             "--start", "2025-09-24", "--end", "2025-09-25", "--until-drained",
             "--data-dir", str(data), "--report", str(report), "--timeout", "240"],
            capture_output=True, text=True, timeout=420, check=False,
            env=environment(REQUESTS_CA_BUNDLE=str(cert), DATABENTO_API_KEY=KEY,
                            MBO_DATABENTO__HISTORICAL_GATEWAY=fake.url),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert fake.count(RANGE_PATH) == 1
    assert not fake.running
    assert "mbo run: GLBX.MDP3 mbo CLX5 (raw_symbol) 2025-09-24T00:00:00Z to " in done.stderr
    assert "costs $0.0412 (limit $5.00)" in done.stderr
    assert "mbo run: replay finished: 38,212 records replayed" in done.stderr
    figures = json.loads(report.read_text())
    assert figures["records"] == figures["rows"]["mbo_records"] == 38_212
    rows, finals = clx5_offline
    assert stored_bbo(data) == rows
    assert_final_books(data, finals)
    # The file replayed is the cached one, under the data dir's download cache.
    (cached,) = (data / "databento" / "GLBX.MDP3").glob("mbo-*.dbn.zst")
    assert figures["producer"]["path"] == str(cached)
