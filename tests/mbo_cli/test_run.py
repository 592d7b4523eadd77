"""`mbo run` end to end on the real local broker and chDB, checked against offline results.

Offline truth: the same book publisher the processor uses, fed the whole file in one process
without Kafka (its own tests check it against `mbo book`); and `mbo book` itself for the final
books. ClickHouse is read with `mbo sql` in a subprocess: chDB lets one process open a data
directory, and this test process may hold another one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mbo_cli.run import _clear_earlier_run
from mbo_core.dbn import open_mbo
from mbo_core.prices import parse_price
from mbo_core.wire import records_headers
from tests.api.pipeline import wait_until
from tests.conftest import make_settings
from tests.offline import assert_final_books, offline, sql, stored_bbo
from tests.paths import CLX5, MBO
from tests.sink.wire import Sent, bbo_message

pytestmark = pytest.mark.integration


def mbo_run(tmp_path: Path, source: Path, *args: str) -> tuple[dict[str, Any], Path]:
    data = tmp_path / "data"
    report = tmp_path / "report.json"
    run = subprocess.run(
        [MBO, "run", "--replay", str(source), "--until-drained", "--data-dir", str(data),
         "--report", str(report), "--timeout", "300", *args],
        capture_output=True, text=True, timeout=420, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    # It says where it stands (a line every 10 s off a terminal) and that it is done.
    assert re.search(r"mbo run: [\d,]+ / [\d,]+ records sent", run.stderr), run.stderr[-3000:]
    assert re.search(r"mbo run: replay finished: [\d,]+ records replayed; everything is in "
                     r"ClickHouse", run.stderr), run.stderr[-3000:]  # fmt: skip
    return json.loads(report.read_text()), data


def generate(path: Path, *, instruments: int, records: int, seed: int, publishers: int = 1) -> Path:
    """`mbo generate` into `path` (.dbn or .dbn.zst); returns the path."""
    subprocess.run(
        [MBO, "generate", "--instruments", str(instruments), "--records", str(records),
         "--publishers", str(publishers), "--seed", str(seed), "-o", str(path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def clx5_offline() -> tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]]:
    return offline(CLX5)


def test_clx5_through_the_whole_pipeline(
    tmp_path: Path,
    clx5_offline: tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]],
) -> None:
    report, data = mbo_run(tmp_path, CLX5)
    rows, finals = clx5_offline
    assert report["records"] == 38_212 and report["events"] == 32_053
    assert report["rows"]["mbo_records"] == 38_212
    assert stored_bbo(data) == rows  # row for row, no loss, no duplicates
    assert report["rows"]["bbo"] == len(rows) == 17_222
    assert_final_books(data, finals)
    # The final snapshot is the book `mbo book` reports.
    book = json.loads(subprocess.run([MBO, "book", str(CLX5)], capture_output=True, text=True,
                                     check=True).stdout)["books"][0]  # fmt: skip
    assert finals[(432669, 1)]["bids"] == book["bids"]
    assert finals[(432669, 1)]["asks"] == book["asks"]
    assert report["latency_ms"]["send_to_event"]["count"] > 0
    # Symbology: the file's mapping with the event-time interval it held over.
    assert sql(data, "SELECT symbol, instrument_id, min(valid_from) AS valid_from, "
                     "max(valid_to) AS valid_to FROM symbology GROUP BY symbol, instrument_id") == [
        {"symbol": "CLX5", "instrument_id": 432669,
         "valid_from": "2025-09-24T19:30:00.000860311Z",
         "valid_to": "2025-09-24T21:59:59.999707295Z"}
    ]  # fmt: skip


def test_each_copy_of_a_looped_replay_is_a_run_of_its_own(
    tmp_path: Path,
    clx5_offline: tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]],
) -> None:
    """Two copies of CLX5: the tables hold each copy's rows apart, labelled with the replay's
    id and the copy, and each copy's BBO history is that of the file alone, row for row (its
    counters from zero: nothing of copy 1 carried into copy 2)."""
    report, data = mbo_run(tmp_path, CLX5, "--loop", "2")
    rows, finals = clx5_offline
    runs = sql(data, "SELECT replay_id, replay_copy, count() AS n FROM mbo_records FINAL "
                     "GROUP BY replay_id, replay_copy ORDER BY replay_copy")  # fmt: skip
    assert [(r["replay_copy"], r["n"]) for r in runs] == [(1, 38_212), (2, 38_213)]  # + Clear
    (replay_id,) = {r["replay_id"] for r in runs}
    assert replay_id.startswith("mbo-run-")
    for copy in (1, 2):
        assert stored_bbo(data, (replay_id, copy)) == rows, copy
    finals_by_copy = sql(data, "SELECT replay_copy, bid_prices, ask_prices FROM book_snapshots "
                               "FINAL WHERE final ORDER BY replay_copy")  # fmt: skip
    assert [r["replay_copy"] for r in finals_by_copy] == [2]  # the end marker closes copy 2
    book = finals[(432669, 1)]
    assert finals_by_copy[0]["bid_prices"] == [parse_price(b["price"]) for b in book["bids"]]
    assert finals_by_copy[0]["ask_prices"] == [parse_price(a["price"]) for a in book["asks"]]
    assert report["rows"]["bbo"] == 2 * len(rows)


def test_a_second_run_on_the_same_data_dir_needs_fresh(tmp_path: Path) -> None:
    first, second = tmp_path / "a.dbn.zst", tmp_path / "b.dbn.zst"
    for path, records, seed in ((first, 3000, 1), (second, 2000, 2)):
        generate(path, instruments=2, records=records, seed=seed)
    report, data = mbo_run(tmp_path, first)
    assert report["rows"]["mbo_records"] == 3000
    # The second file would be appended to the first run's topic and books: refused.
    refused = subprocess.run(
        [MBO, "run", "--replay", str(second), "--until-drained", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "already holds" in refused.stderr and "--fresh" in refused.stderr
    # --fresh never deletes the data of a run that is still going: its broker holds the dir.
    started = time.time()
    live = subprocess.Popen(
        [MBO, "run", "--replay", str(second), "--rate", "200", "--data-dir", str(data), "--fresh"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Its stages are up: it writes ports.json once its consumers joined, after its --fresh
        # cleared the first run's data. (Not the ClickHouse directory's mtime: deleting the
        # first run's directory entry by entry also moves it, while the directory is still
        # there for a moment; a clash that came then found none a moment later.)
        def live_run_up() -> bool:
            ports = data / "run" / "ports.json"
            return (data / "clickhouse").exists() and (
                ports.exists() and ports.stat().st_mtime >= started
            )

        wait_until(live_run_up, 60, "the live run's stages")
        clash = subprocess.run(
            [MBO, "run", "--replay", str(first), "--data-dir", str(data), "--fresh"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert clash.returncode == 2 and "already running" in clash.stderr
        assert (data / "clickhouse").exists()
    finally:
        live.send_signal(signal.SIGTERM)
        live.wait(timeout=120)
    report, data = mbo_run(tmp_path, second, "--fresh")
    assert report["rows"]["mbo_records"] == 2000
    counted = subprocess.run(
        [MBO, "sql", "SELECT count() AS n FROM mbo_records FINAL", "--data-dir", str(data)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert json.loads(counted.stdout)["n"] == 2000  # only the second file's records


def test_earlier_rows_are_looked_for_where_the_chdb_url_points(tmp_path: Path) -> None:
    # A chDB outside the data dir: the check (and --fresh) must use it, not <data dir>/clickhouse.
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    env = {**os.environ, "MBO_CLICKHOUSE__URL": f"chdb://{elsewhere}"}
    elsewhere.mkdir()  # mbo sql refuses a chDB directory that does not exist (a typo)
    for statement in ("CREATE TABLE mbo_records (x UInt8) ENGINE = MergeTree ORDER BY x",
                      "CREATE TABLE bbo (x UInt8) ENGINE = MergeTree ORDER BY x",
                      "INSERT INTO mbo_records VALUES (1), (2)"):  # fmt: skip
        subprocess.run([MBO, "sql", statement, "--data-dir", str(data)], env=env, check=True,
                       capture_output=True, timeout=120)  # fmt: skip
    refused = subprocess.run(
        [MBO, "run", "--replay", str(CLX5), "--until-drained", "--data-dir", str(data)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"{elsewhere} already holds 2 rows" in refused.stderr
    assert not (data / "clickhouse").exists()
    # What --fresh deletes (after its own broker started): that chDB and the processors' state.
    settings = make_settings(data_dir=data, clickhouse={"url": f"chdb://{elsewhere}"})
    (settings.processor_dir / "group").mkdir(parents=True)
    _clear_earlier_run(settings)
    assert not elsewhere.exists() and not settings.processor_dir.exists()


def test_generated_instruments_on_two_workers(tmp_path: Path) -> None:
    source = generate(tmp_path / "gen.dbn.zst", instruments=6, records=60_000, publishers=2,
                      seed=11)  # fmt: skip
    env_partitions = {"MBO_TOPICS__RECORDS__PARTITIONS": "8"}
    os.environ.update(env_partitions)
    try:
        report, data = mbo_run(tmp_path, source, "--workers", "2")
    finally:
        for name in env_partitions:
            os.environ.pop(name)
    rows, finals = offline(source)
    assert report["rows"]["mbo_records"] == report["records"] > 0
    assert stored_bbo(data) == rows
    assert_final_books(data, finals)
    logs = data / "run" / "logs"
    for worker in ("processor-0", "processor-1"):
        assert "taking partition" in (logs / f"{worker}.log").read_text(), worker


def test_several_publishers_and_an_open_tail_equal_mbo_book(tmp_path: Path) -> None:
    """Interleaved publishers of each instrument, and a file that ends mid-event: every raw
    record in ClickHouse, the BBO rows (consolidated ones too) and the final books are what
    `mbo book` computes, and the open records are counted alike. Produce requests of 128 KiB
    (a records message of 2048 records is 115 KB): the processor cuts larger outputs."""
    source = generate(tmp_path / "tail.dbn", instruments=2, records=20_000, publishers=3,
                      seed=17)  # fmt: skip
    records = np.concatenate(list(open_mbo(source).batches()))
    tail = records[-3:].copy()  # new orders of the last record's book, never closed
    tail["action"], tail["side"], tail["flags"] = ord("A"), ord("B"), 0
    tail["order_id"] = records["order_id"].max() + 1 + np.arange(3, dtype=np.uint64)
    tail["size"] = 1
    with source.open("ab") as dbn:  # a plain .dbn: the body is the records after the metadata
        dbn.write(tail.tobytes())
    total = len(records) + 3
    book = json.loads(
        subprocess.run([MBO, "book", str(source), "--events", str(tmp_path / "events.jsonl")],
                       capture_output=True, text=True, check=True, timeout=300).stdout
    )  # fmt: skip
    small_requests = {"MBO_KAFKA__MAX_REQUEST_SIZE": str(128 * 1024)}
    os.environ.update(small_requests)
    try:
        report, data = mbo_run(tmp_path, source)
    finally:
        for name in small_requests:
            os.environ.pop(name)
    assert report["rows"]["mbo_records"] == total
    # Some records messages had more BBO rows (152 bytes each) than one request holds.
    (largest,) = sql(data, "SELECT max(n) AS n FROM (SELECT count() AS n FROM bbo FINAL "
                           "GROUP BY source_partition, source_offset)")  # fmt: skip
    assert largest["n"] * 152 > 128 * 1024
    assert stored_bbo(data) == _bbo_rows_of_book_events(tmp_path / "events.jsonl")
    finals = {(b["instrument_id"], b["publisher_id"] or 0): b for b in book["books"]}
    assert sum(1 for key in finals if key[1] == 0) == 2  # both instruments consolidated
    assert_final_books(data, finals)
    quality = sql(data, "SELECT instrument_id, publisher_id, quality['unterminated_event_records']"
                        " AS n FROM book_snapshots FINAL WHERE final")  # fmt: skip
    for row in quality:
        expected = finals[(row["instrument_id"], row["publisher_id"])]["quality"]
        assert row["n"] == expected["unterminated_event_records"]
    assert sum(r["n"] for r in quality if r["publisher_id"] != 0) == 3


def _bbo_rows_of_book_events(events: Path) -> list[tuple[Any, ...]]:
    """The BBO rows a processor publishes, derived from `mbo book --events`: per book (and per
    consolidated book), a row wherever the best levels differ from its previous line's."""

    def top(side: list[dict[str, Any]]) -> tuple[Any, ...]:
        return (parse_price(side[0]["price"]), side[0]["size"], side[0]["count"]) if side \
            else (None, 0, 0)  # fmt: skip

    empty = ((None, 0, 0), (None, 0, 0))
    previous: dict[tuple[int, int], Any] = {}
    rows: list[tuple[Any, int, tuple[Any, ...]]] = []
    for index, line in enumerate(events.read_text().splitlines()):
        e = orjson.loads(line)
        key = (e["instrument_id"], e["publisher_id"] or 0)
        best = (top(e["bids"]), top(e["asks"]))
        # A publisher's first row is its first change from an empty book; a consolidated
        # book's is its first line.
        if best != previous.get(key, empty if key[1] else None):
            bid, ask = best
            row = (key[0], key[1], e["ts_event"], e["ts_recv"], e["sequence"], *bid, *ask,
                   e["crossed"], e["locked"])  # fmt: skip
            rows.append((key[0], index, row))
        previous[key] = best
    # ClickHouse's order (BBO_SQL): by instrument, then stream position (consolidated last).
    return [row for _, _, row in sorted(rows, key=lambda r: (r[0], r[1]))]


def _run_clx5_with_faults(
    tmp_path: Path,
    rate: int,
    faults: Callable[[Path, subprocess.Popen[bytes]], None],
    env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Path]:
    """`mbo run --until-drained` of CLX5 at `rate` while `faults(processes.json, run)` acts on
    it; (the report, the data dir) once it has drained, exit code 0 asserted."""
    data = tmp_path / "data"
    report = tmp_path / "report.json"
    run = subprocess.Popen(
        [MBO, "run", "--replay", str(CLX5), "--rate", str(rate), "--until-drained",
         "--data-dir", str(data), "--report", str(report), "--timeout", "300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        faults(data / "run" / "processes.json", run)
        _, stderr = run.communicate(timeout=400)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr.decode()[-3000:]
    return json.loads(report.read_text()), data


def test_processor_and_sink_killed_mid_replay(
    tmp_path: Path,
    clx5_offline: tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]],
) -> None:
    def kill_processor_and_sink(processes: Path, run: subprocess.Popen[bytes]) -> None:
        pids = _wait_for_producer(processes, run)
        time.sleep(3)  # part of the file is through every stage by now
        # Two checkpoints: the older is at or before the offset the restarted worker resumes at.
        checkpoints = processes.parent.parent / "processor"
        wait_until(lambda: len(list(checkpoints.glob("*/checkpoints/*/*/*.ckpt"))) >= 2, 60,
                   "two processor checkpoints")  # fmt: skip
        for stage in ("processor-0", "sink"):
            os.kill(pids[stage], signal.SIGKILL)

    # Checkpoints every half second: the restarted processor resumes from one.
    env = {**os.environ, "MBO_PIPELINE__CHECKPOINT_INTERVAL_S": "0.5"}
    figures, data = _run_clx5_with_faults(tmp_path, 4000, kill_processor_and_sink, env)
    assert figures["restarts"]["processor-0"] >= 1 and figures["restarts"]["sink"] >= 1
    rows, finals = clx5_offline
    assert figures["rows"]["mbo_records"] == 38_212
    assert stored_bbo(data) == rows
    assert_final_books(data, finals)
    assert "restored from checkpoint" in (data / "run" / "logs" / "processor-0.log").read_text()


def test_producer_killed_twice_mid_replay_resumes(
    tmp_path: Path,
    clx5_offline: tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]],
) -> None:
    """kill -9 of the producer mid-replay, twice: the supervisor restarts it, it resumes the
    replay after what the records topic holds, and every record is in it once."""

    def kill_the_producer_twice(processes: Path, run: subprocess.Popen[bytes]) -> None:
        killed: list[int] = []
        for _ in range(2):
            pid = _wait_for_producer(processes, run, not_these=killed)["producer"]
            time.sleep(1.5)  # records flow meanwhile
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    figures, data = _run_clx5_with_faults(tmp_path, 5000, kill_the_producer_twice)
    assert figures["restarts"]["producer"] == 2
    assert figures["records"] == 38_212  # this producer's and its predecessors'
    assert figures["producer"]["records_already_sent"] > 0
    rows, finals = clx5_offline
    assert _count(data, "SELECT count() AS n FROM mbo_records FINAL") == 38_212
    # Not one record twice under different offsets: each (ts, sequence, order) once.
    assert _count(data, "SELECT uniqExact(source_partition, source_offset) AS n FROM mbo_records "
                        "FINAL") == _count(data, "SELECT uniqExact(source_offset) AS n FROM "
                                                 "mbo_records FINAL")  # fmt: skip
    assert stored_bbo(data) == rows
    assert_final_books(data, finals)
    log = (data / "run" / "logs" / "producer.log").read_text()
    assert log.count("resuming replay") == 2


def test_broker_killed_twice_mid_replay(
    tmp_path: Path,
    clx5_offline: tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]],
) -> None:
    """kill -9 of the local broker mid-replay, and again once the supervisor restarted it: the
    drained tables still equal the offline results, nothing lost, nothing twice."""

    def kill_the_broker_twice(processes: Path, run: subprocess.Popen[bytes]) -> None:
        _wait_for_producer(processes, run)
        killed: list[int] = []
        for _ in range(2):
            time.sleep(2)  # records flow through every stage meanwhile
            broker_pid = _running_broker(processes, killed)
            os.kill(broker_pid, signal.SIGKILL)
            killed.append(broker_pid)

    figures, data = _run_clx5_with_faults(tmp_path, 3000, kill_the_broker_twice)
    assert figures["restarts"]["broker"] == 2
    assert figures["producer"]["records_sent"] == 38_212
    rows, finals = clx5_offline
    assert figures["rows"]["mbo_records"] == 38_212
    # Every record once in the topic: a batch sent twice would be rows at other offsets.
    assert _count(data, "SELECT count() AS n FROM mbo_records FINAL") == 38_212
    assert stored_bbo(data) == rows
    assert_final_books(data, finals)


def _poison(records: np.ndarray) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """One malformed records message of each kind: (key, value, headers)."""
    key = b"432669"
    bad_action = records[:20].copy()
    bad_action["action"][7] = ord("X")

    def hdrs(n: int) -> list[tuple[str, bytes]]:
        return records_headers(dataset="GLBX.MDP3", symbol="CLX5", sent_ns=1, records=n)

    return [
        (key, np.random.default_rng(3).bytes(100), []),  # random bytes
        (key, records[:5].tobytes()[:-9], hdrs(5)),  # wrong length
        (key, bad_action.tobytes(), hdrs(20)),  # one bad action among good records
        (b"not-an-id", records[:20].tobytes(), hdrs(20)),  # bad key
    ]


def test_poison_messages_mid_replay_are_dead_lettered(
    tmp_path: Path,
    clx5_offline: tuple[list[tuple[Any, ...]], dict[tuple[int, int], dict[str, Any]]],
) -> None:
    """Malformed messages written into the records and BBO topics of a running pipeline: each
    consumer copies each to the dead-letter topic with where it came from and why, every good
    record still ends in ClickHouse, the BBO rows equal the offline ones, and the report and
    `mbo run` say so."""
    from mbo_core.kafka import broker  # noqa: PLC0415
    from mbo_core.kafka.clients import make_producer  # noqa: PLC0415

    records = np.concatenate(list(open_mbo(CLX5).batches()))
    data = tmp_path / "data"

    def inject(processes: Path, run: subprocess.Popen[bytes]) -> None:
        _wait_for_producer(processes, run)
        time.sleep(1)  # records flow meanwhile: the poison lands mid-stream
        state = broker.read_state(make_settings(data_dir=data))
        assert state is not None
        settings = make_settings(
            data_dir=data, kafka={"bootstrap_servers": state.bootstrap_servers}
        )

        async def send() -> None:
            producer = make_producer(settings, "poison")
            await producer.start()
            try:
                for key, value, headers in _poison(records):
                    await producer.send_and_wait("mbo.records", value, key=key, headers=headers)
                # A BBO message whose key is not its instrument: only the sink reads it.
                bad_bbo = bbo_message(Sent(partition=0, offset=0, records=records[:10]), [0])
                await producer.send_and_wait("mbo.bbo", bad_bbo.value, key=b"1",
                                             headers=bad_bbo.headers)  # fmt: skip
            finally:
                await producer.stop()

        asyncio.run(send())

    figures, data = _run_clx5_with_faults(tmp_path, 4000, inject)
    rows, finals = clx5_offline
    assert figures["rows"]["mbo_records"] == 38_212  # every good record, none of the bad
    assert stored_bbo(data) == rows
    assert_final_books(data, finals)
    letters = figures["dead_letters"]
    # The processor and the sink each refused the four records messages; the sink the BBO one.
    assert letters["by_consumer"] == {"processor": 4, "sink": 5}
    assert letters["by_reason"] == {"length": 4, "action": 2, "key": 3}
    assert letters["by_topic"] == {"mbo.records": 8, "mbo.bbo": 1}
    assert figures["restarts"]["processor-0"] == 0 and figures["restarts"]["sink"] == 0
    log = (data / "run" / "logs" / "processor-0.log").read_text()
    assert log.count("dead-lettered mbo.records") == 4


def test_a_file_cut_mid_replay_stops_it_with_a_partial_report(tmp_path: Path) -> None:
    """The file passes the check, then is cut while the producer replays it: mbo run says why
    in one line and exits 2, the producer is not restarted, and the report marks the load
    partial with what got in."""
    source = generate(tmp_path / "cut-later.dbn", instruments=2, records=200_000, seed=4)
    data = tmp_path / "data"
    report = tmp_path / "report.json"
    run = subprocess.Popen(
        [MBO, "run", "--replay", str(source), "--rate", "20000", "--until-drained",
         "--data-dir", str(data), "--report", str(report), "--timeout", "300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for_producer(data / "run" / "processes.json", run)
        time.sleep(2)
        size = source.stat().st_size
        with source.open("r+b") as f:
            f.truncate(size - (size // 2) // 56 * 56)  # whole records off its end
        _, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    text = stderr.decode()
    assert run.returncode == 2, text[-3000:]
    assert "the replay stopped part-way" in text and "changed while being read" in text
    figures = json.loads(report.read_text())
    assert "changed while being read" in figures["partial"]["error"]
    assert figures["restarts"]["producer"] == 0
    assert 0 < figures["rows"]["mbo_records"] < 200_000


def _running_broker(processes: Path, not_these: list[int]) -> int:
    """The pid of the run's broker once it is none of `not_these` (i.e. restarted)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pid = json.loads(processes.read_text()).get("broker")
        if pid is not None and pid not in not_these:
            return int(pid)
        time.sleep(0.1)
    raise AssertionError("the supervisor did not restart the broker")


def _count(data: Path, query: str) -> int:
    done = subprocess.run(
        [MBO, "sql", query, "--data-dir", str(data)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return int(json.loads(done.stdout)["n"])


def _wait_for_producer(
    path: Path, run: subprocess.Popen[bytes], not_these: list[int] | None = None
) -> dict[str, int]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert run.poll() is None, "mbo run ended early"
        if path.exists():
            children: dict[str, int] = json.loads(path.read_text())["children"]
            if "producer" in children and children["producer"] not in (not_these or []):
                return children
        time.sleep(0.2)
    raise AssertionError("the producer never started")


def test_sigterm_while_starting_stops_every_stage(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = subprocess.Popen(
        [MBO, "run", "--replay", str(CLX5), "--until-drained", "--data-dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    pids_file = data / "run" / "processes.json"
    deadline = time.monotonic() + 120
    children: dict[str, int] = {}
    while "processor-0" not in children:
        assert time.monotonic() < deadline, "the stages never started"
        assert run.poll() is None, "mbo run ended early"
        if pids_file.exists():
            children = json.loads(pids_file.read_text())["children"]
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 2, stderr.decode()[-2000:]
    assert "interrupted" in stderr.decode()
    for pid in children.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone, not orphaned
    assert not list(data.rglob("state.json")), "the local broker was left running"


@pytest.mark.parametrize("case", ["cut.dbn", "cut.dbn.zst", "corrupt.dbn.zst"])
def test_a_bad_file_fails_in_one_line_before_anything_starts(tmp_path: Path, case: str) -> None:
    import zstandard  # noqa: PLC0415

    whole = CLX5.read_bytes()
    source = tmp_path / case
    if case == "cut.dbn.zst":
        # The frame is cut too: what a download that stopped early leaves.
        compressed = zstandard.ZstdCompressor().compress(whole)
        source.write_bytes(compressed[: len(compressed) - 5000])
    elif case == "corrupt.dbn.zst":
        # Two bytes flipped in a frame without a checksum: it decompresses, to garbage records.
        corrupt = bytearray(zstandard.ZstdCompressor(write_checksum=False).compress(whole))
        corrupt[len(corrupt) // 2] ^= 0xFF
        corrupt[len(corrupt) // 2 + 1] ^= 0x55
        source.write_bytes(bytes(corrupt))
    else:
        source.write_bytes(whole[: len(whole) - 1000 - 13])  # mid-record, far from the end
    data = tmp_path / "data"
    started = time.monotonic()
    run = subprocess.run(
        [MBO, "run", "--replay", str(source), "--until-drained", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(source) in lines[0], run.stderr
    assert "truncated" in lines[0] or "corrupt" in lines[0]
    assert time.monotonic() - started < 10  # process start-up included; no broker was booted
    assert not (data / "kafka").exists()
