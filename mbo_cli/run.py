"""`mbo run`: the whole pipeline in one command, each stage its own supervised process.

Starts the local Kafka broker (unless MBO_KAFKA__BOOTSTRAP_SERVERS names one), creates the
topics, then runs `mbo produce`, `mbo process` (one per --workers), `mbo sink` and `mbo api` (the
API and web UI) as child processes sharing one environment. With a chdb:// ClickHouse URL the sink
runs inside the API process (`mbo api --with-sink`, child name "sink"): chDB allows one process
per data directory, and both need it. A processor or sink that dies is restarted: both rebuild
what they need from Kafka. A producer that dies is restarted too: it resumes the run's replay
(one replay id) after what the records topic holds of each instrument (producer/resume.py), so
every record is in the topic once. A local broker that dies is restarted on the same ports and
data (every topic, message and committed offset survives); the stages' clients reconnect and the
producer's idempotent retries write each batch once. A stage that keeps dying is restarted with
backoff until the run gives up (mbo_cli.supervisor).

The source is a DBN file (--replay FILE), Databento's Historical API (--historical: the request is
fetched into the download cache as `mbo fetch` does, with the same cost limit and --yes, then its
file is replayed exactly as --replay replays one) or Databento's Live API (--live: the producer is
`mbo produce --live`; the run serves until SIGINT/SIGTERM, which stops the live session first,
then waits until everything it received is in ClickHouse, writes the report and exits 0). The key
is checked with the Live gateway before anything starts (docs/databento.md).

--until-drained waits until every record is reflected everywhere: the producer finished, both
consumer groups have committed the end of the records topic, and the sink has committed the end
of the BBO and snapshot topics (end offsets read twice alike). Then it stops
the stages, writes the report and exits 0. Without it, the stages keep running until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from mbo_cli import databento_options as db_options
from mbo_cli.databento_options import SymbolType
from mbo_cli.forkserver import ForkServer
from mbo_cli.produce import EXIT_BAD_INPUT
from mbo_cli.progress import RunProgress
from mbo_cli.supervisor import Supervisor, mbo_command
from mbo_core.errors import InputError, MboError
from mbo_core.latency_log import run_latency_dir

log = logging.getLogger("mbo.run")

#: Longest one round of the drain wait's offset reads may take before it is asked again.
OFFSETS_WAIT_S = 3.0


def run(
    replay: Annotated[Path | None, typer.Option("--replay", help="DBN MBO file to replay.")] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", help="Replay at this many records/s.")
    ] = None,
    speed: Annotated[
        float | None, typer.Option("--speed", help="Replay at this multiple of recorded time.")
    ] = None,
    max_: Annotated[
        bool, typer.Option("--max", help="Replay flat out (the default without --rate/--speed).")
    ] = False,
    loop: Annotated[int, typer.Option("--loop", min=1, help="Replay the file N times.")] = 1,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="Book-processor worker processes.")
    ] = 1,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Local state (default MBO_DATA_DIR).")
    ] = None,
    until_drained: Annotated[
        bool,
        typer.Option("--until-drained", help="Stop once everything is in ClickHouse; exit 0."),
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the run's figures here as JSON.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Longest wait for draining (s).")
    ] = 1800,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Delete what an earlier run left in the data dir: the local broker's topics, "
            "the embedded ClickHouse data and the processors' state (needed when it holds rows).",
        ),
    ] = False,
    historical: Annotated[
        bool,
        typer.Option(
            "--historical",
            help="Fetch --dataset/--symbols/--start/--end from Databento's Historical API (as "
            "`mbo fetch`: cost limit, --yes, cache), then replay it as --replay does.",
        ),
    ] = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Stream --dataset/--symbols from Databento's Live API until Ctrl-C, then drain "
            "and report.",
        ),
    ] = False,
    dataset: db_options.Dataset = None,
    symbols: db_options.Symbols = None,
    stype_in: db_options.StypeIn = SymbolType.raw_symbol,
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            help="--historical: inclusive start; --live: replay from this time (last 24 h) "
            "instead of a snapshot. ISO 8601 (UTC unless it has an offset) or UNIX ns.",
        ),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="--historical: exclusive end, as --start.")
    ] = None,
    snapshot: db_options.Snapshot = None,
    record: db_options.Record = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="--historical: pay for a request above the cost limit."),
    ] = False,
    cost_limit: Annotated[
        float | None,
        typer.Option("--cost-limit", min=0, help="--historical: cost limit in USD for this run."),
    ] = None,
) -> None:
    """Replay FILE (or Databento data) through Kafka, the book processors and ClickHouse."""
    from mbo_core.dbn import open_mbo  # noqa: PLC0415
    from mbo_core.logs import configure_logging  # noqa: PLC0415
    from mbo_core.settings import load_settings  # noqa: PLC0415

    if sum(option is not None for option in (rate, speed)) + max_ > 1:
        raise InputError("--rate, --speed and --max exclude each other")
    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    settings = load_settings(**overrides)
    configure_logging(settings.log, "run")
    file_only = {"--rate": rate, "--speed": speed, "--max": max_ or None,
                 "--loop": loop if loop != 1 else None}  # fmt: skip
    replay, live_args = _source(
        settings, replay, historical, live, dataset, symbols, stype_in, start, end, snapshot,
        record, yes, cost_limit, [name for name, value in file_only.items() if value is not None],
    )  # fmt: skip
    # Bad input fails here, in one line, before anything starts: the whole file is read once
    # (0.23 CPU-s for 2M records), so a truncated or corrupt body is found now, not by the
    # producer seconds into a started pipeline.
    per_copy = sum(len(batch) for batch in open_mbo(replay).batches()) if replay else 0
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if fresh and settings.chdb_dir is None:
        raise InputError(
            "--fresh clears only the embedded chDB; with a ClickHouse server, truncate the "
            f"tables of {settings.clickhouse.database!r} or set MBO_CLICKHOUSE__DATABASE"
        )
    # Before anything starts: a SIGTERM during start-up must still stop what was started (the
    # children run in sessions of their own, so nothing else would stop them).
    stop = _stop_on_signals()
    with contextlib.ExitStack() as stack:
        # First, so that its imports overlap the broker's start (mbo_cli/forkserver.py).
        forkserver = ForkServer.start(settings.data_dir / "run" / "logs" / "forkserver.log")
        if forkserver is not None:
            stack.callback(forkserver.close)
        # After the broker: starting it fails while another run holds this data dir, so --fresh
        # never deletes the data of a live run.
        local_broker = _local_broker(settings, stack, fresh=fresh)
        bootstrap = (
            local_broker.bootstrap_servers
            if local_broker is not None
            else str(settings.kafka.bootstrap_servers)
        )
        if fresh:
            _clear_earlier_run(settings)
        if not settings.kafka.bootstrap_servers:
            _refuse_earlier_rows(settings)
        env = _stage_environment(settings, bootstrap, replay, until_drained=until_drained)
        settings = load_settings(**overrides, kafka={"bootstrap_servers": bootstrap})
        asyncio.run(_ensure_topics(settings))
        run_dir = settings.data_dir / "run"
        supervisor = Supervisor(
            run_dir=run_dir, env=env, broker=local_broker, forkserver=forkserver
        )
        stack.callback(supervisor.stop_all)
        ports = _start_stages(
            supervisor, settings, replay, rate, speed, loop, workers, run_dir, stop, live_args
        )
        print(
            f"mbo run: broker {bootstrap}, ClickHouse {settings.clickhouse_url}, "
            f"logs in {run_dir / 'logs'}\n"
            f"mbo run: UI and API at http://{settings.api.host}:{ports['api']}/ "
            f"(API docs at /docs)",
            file=sys.stderr,
        )
        progress = _progress(settings, ports, per_copy * loop if replay else None)
        if live_args is not None:
            figures = _serve_live(supervisor, settings, ports, stop, timeout, progress)
        elif not until_drained:
            _serve_until_stopped(supervisor, settings, stop, progress)
            return
        else:
            figures = _drain_and_report(supervisor, settings, ports, stop, timeout, progress)
        _say_dead_letters(figures["dead_letters"], settings.topics.dead_letter.name)
        replay_error = supervisor.children["producer"].error
        if replay_error is not None:
            # What was sent before the file went bad is in every table: a partial load.
            figures["partial"] = {"error": replay_error}
    text = json.dumps(figures, indent=1)
    if report is not None:
        report.write_text(text + "\n")
    print(text)
    if "partial" in figures:
        raise InputError(
            f"the replay stopped part-way: {figures['partial']['error']}; what was sent before "
            "is loaded (the report says partial)"
        )


def _source(
    settings: Any,
    replay: Path | None,
    historical: bool,
    live: bool,
    dataset: str | None,
    symbols: str | None,
    stype_in: SymbolType,
    start: str | None,
    end: str | None,
    snapshot: bool | None,
    record: Path | None,
    yes: bool,
    cost_limit: float | None,
    file_options: list[str],
) -> tuple[Path | None, list[str] | None]:
    """The file to replay (--replay, or --historical's, fetched now) or the arguments of the live
    producer (--live, its key checked with the gateway now); InputError or DatabentoError (one
    line) before anything starts."""
    chosen = [name for name, on in (("--replay", replay is not None), ("--historical", historical),
                                    ("--live", live)) if on]  # fmt: skip
    if len(chosen) != 1:
        raise InputError(
            "choose the source: --replay FILE, --historical or --live"
            + (f", not {' and '.join(chosen)}" if chosen else "")
        )
    databento = {"--dataset": dataset, "--symbols": symbols, "--start": start}
    only: dict[str, dict[str, object]] = {
        "--historical": {"--end": end, "--yes": yes or None, "--cost-limit": cost_limit},
        "--live": {"--snapshot": snapshot, "--record": record},
    }
    for source, options in only.items():
        given = [name for name, value in options.items() if value is not None]
        if given and source != chosen[0]:
            raise InputError(f"{given[0]} is for {source}")
    if replay is not None:
        given = [name for name, value in databento.items() if value is not None]
        if given:
            raise InputError(f"{given[0]} is for --historical and --live")
        return replay, None
    if dataset is None or symbols is None:
        raise InputError(f"{chosen[0]} needs --dataset and --symbols")
    if historical:
        if start is None or end is None:
            raise InputError("--historical needs --start and --end")
        return _fetch(settings, dataset, symbols, stype_in, start, end, yes, cost_limit), None
    if file_options:
        raise InputError(f"{file_options[0]} is for file replays: a live session comes at the "
                         "market's pace, once")  # fmt: skip
    return None, _check_live(settings, dataset, symbols, stype_in, start, snapshot, record)


def _fetch(
    settings: Any,
    dataset: str,
    symbols: str,
    stype_in: SymbolType,
    start: str,
    end: str,
    yes: bool,
    cost_limit: float | None,
) -> Path:
    """The request's file in the download cache: fetched (and paid for) as `mbo fetch` does."""
    from mbo_cli.fetch import fetch_file  # noqa: PLC0415
    from mbo_core.databento.historical import RangeRequest  # noqa: PLC0415

    def notice(line: str) -> None:
        print(f"mbo run: {line}", file=sys.stderr, flush=True)

    request = RangeRequest.of(dataset, symbols, stype_in.value, start, end)
    return fetch_file(settings, request, yes=yes, cost_limit=cost_limit, notice=notice).path


def _check_live(
    settings: Any,
    dataset: str,
    symbols: str,
    stype_in: SymbolType,
    start: str | None,
    snapshot: bool | None,
    record: Path | None,
) -> list[str]:
    """The live producer's arguments, once the gateway accepted the key and the dataset (a
    connection that authenticates and leaves: no subscription, no data)."""
    from mbo_core.databento.live import LiveRequest, check_access  # noqa: PLC0415

    request = LiveRequest.of(dataset, symbols, stype_in.value, start, snapshot)
    if record is not None and record.exists():
        raise InputError(f"{record}: exists; --record writes a new file")
    key = settings.databento.api_key
    asyncio.run(
        check_access(
            request,
            key=key.get_secret_value() if key is not None else None,
            gateway=settings.databento.live_gateway,
            port=settings.databento.live_port,
        )
    )
    args = ["--dataset", request.dataset, "--symbols", ",".join(request.symbols),
            "--stype-in", request.stype_in]  # fmt: skip
    if request.start is not None:
        args += ["--start", str(request.start)]
    else:
        args.append("--snapshot" if request.snapshot else "--no-snapshot")
    if record is not None:
        args += ["--record", str(record.resolve())]
    return args


def _stage_environment(
    settings: Any, bootstrap: str, replay: Path | None, *, until_drained: bool
) -> dict[str, str]:
    """The environment every stage starts with: this run's broker, data dir and ClickHouse."""
    latency_dir = run_latency_dir(settings.data_dir / "run")
    shutil.rmtree(latency_dir, ignore_errors=True)  # an earlier run's stamps
    env = {
        **os.environ,
        "MBO_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "MBO_DATA_DIR": str(settings.data_dir),
        "MBO_CLICKHOUSE__URL": settings.clickhouse_url,
    }
    if until_drained:
        # The processors write down each publication's stamps for the report (16 bytes a
        # message: not for a run that serves until Ctrl-C, which writes no report).
        env["MBO_PIPELINE__LATENCY_LOG_DIR"] = str(latency_dir)
    if settings.api.replay_dir is None and replay is not None:
        # The UI's replay control may replay the files beside the one given here.
        env["MBO_API__REPLAY_DIR"] = str(replay.resolve().parent)
    return env


def _progress(settings: Any, ports: dict[str, int], total: int | None) -> RunProgress:
    # With chDB the sink runs inside the API process, whose /metrics is the API's.
    sink_host = settings.api.host if ports["sink"] == ports["api"] else settings.metrics.host
    return RunProgress(settings.metrics.host, ports, sink_host, total)


def _drain_and_report(
    supervisor: Supervisor,
    settings: Any,
    ports: dict[str, int],
    stop: list[int],
    timeout: float,
    progress: RunProgress,
) -> dict[str, Any]:
    """Wait until the pipeline drained, stop the stages, and return the run's figures."""
    started = time.time()
    drained_at = asyncio.run(_wait_drained(supervisor, settings, stop, timeout, progress))
    _say_drained(supervisor, progress)
    from mbo_cli.report import build_report, running_counts  # noqa: PLC0415
    from mbo_cli.sql import api_address  # noqa: PLC0415

    sink_metrics = _scrape(progress.sink_host, ports["sink"])
    # With the embedded chDB, counted by the API that holds it (with a server, after the stop).
    counts = (
        running_counts(settings, api_address(settings.api.host, ports["api"]))
        if settings.chdb_dir is not None
        else None
    )
    supervisor.stop_all()
    return build_report(
        settings,
        run_dir=supervisor.run_dir,
        started=started,
        drained_at=drained_at,
        sink_metrics=sink_metrics,
        restarts=supervisor.restarts(),
        counts=counts,
    )


def _say_dead_letters(dead_letters: dict[str, Any], topic: str) -> None:
    """One line on stderr when consumers refused messages: the run drained, but not all of its
    topics' messages are in ClickHouse."""
    if dead_letters["messages"]:
        reasons = ", ".join(f"{n} {reason}" for reason, n in dead_letters["by_reason"].items())
        print(
            f"mbo run: {dead_letters['messages']} malformed messages refused ({reasons}) and "
            f"copied to {topic}; the report's dead_letters says by whom (docs/faults.md)",
            file=sys.stderr,
        )


def _clear_earlier_run(settings: Any) -> None:
    for state in (settings.chdb_dir, settings.processor_dir):
        shutil.rmtree(state, ignore_errors=True)


def _refuse_earlier_rows(settings: Any) -> None:
    """Refuse a run on a data dir whose ClickHouse already holds an earlier run's rows.

    The new file's records would be appended to the earlier run's topic and books: its books
    would carry on from the earlier run's resting orders, and ClickHouse would mix the two runs
    (or, where the Kafka storage was deleted by hand and offsets start at 0 again, replace rows
    keyed by the same Kafka positions). Counted in a child process, since chDB lets one process
    open a data directory and the stages need it next.
    """
    chdb_dir = settings.chdb_dir
    if chdb_dir is not None and not chdb_dir.exists():
        return
    query = "SELECT (SELECT count() FROM mbo_records) + (SELECT count() FROM bbo) AS rows"
    counted = subprocess.run(
        mbo_command("sql", query, "--data-dir", str(settings.data_dir)),
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if counted.returncode != 0:
        # No tables yet (nothing to collide with), or a server that does not answer (the run
        # says so itself when its stages start).
        log.debug("counting earlier rows: %s", counted.stderr.strip())
        return
    rows = int(json.loads(counted.stdout.splitlines()[0])["rows"]) if counted.stdout else 0
    if rows:
        where = f"database {settings.clickhouse.database!r}" if chdb_dir is None else str(chdb_dir)
        raise InputError(
            f"{where} already holds {rows:,} rows of an earlier run; replaying on top of it would "
            "mix the two runs (the books would carry on from the earlier run's orders). "
            "Use another --data-dir, or --fresh to delete the earlier run's data first."
        )


def _local_broker(settings: Any, stack: contextlib.ExitStack, *, fresh: bool) -> Any:
    """The run's own local broker (stopped when the run ends), None with an external Kafka."""
    if settings.kafka.bootstrap_servers:
        return None
    from mbo_core.kafka.broker import LocalBroker  # noqa: PLC0415

    return stack.enter_context(LocalBroker(settings, fresh=fresh))


async def _ensure_topics(settings: Any) -> None:
    from mbo_core.kafka.topics import ensure_topics  # noqa: PLC0415

    await ensure_topics(settings)


def _start_stages(
    supervisor: Supervisor,
    settings: Any,
    replay: Path | None,
    rate: float | None,
    speed: float | None,
    loop: int,
    workers: int,
    run_dir: Path,
    stop: list[int],
    live_args: list[str] | None = None,
) -> dict[str, int]:
    from mbo_core.kafka.probes import free_port  # noqa: PLC0415

    api_port = _api_port(settings)
    ports = {"sink": free_port(), "producer": free_port(), "api": api_port}
    if settings.chdb_dir is not None:
        # chDB allows one process per data directory: the API and the sink share one.
        ports["sink"] = api_port
        supervisor.start("sink", ["api", "--with-sink", "--port", str(api_port)], restart=True)
    else:
        supervisor.start("sink", ["sink", "--metrics-port", str(ports["sink"])], restart=True)
        supervisor.start("api", ["api", "--port", str(api_port)], restart=True)
    for i in range(workers):
        ports[f"processor-{i}"] = port = free_port()
        supervisor.start(
            f"processor-{i}",
            ["process", "--worker-index", str(i), "--metrics-port", str(port)],
            restart=True,
        )
    # Records sent before the consumers have joined would wait for them and measure start-up,
    # not the pipeline.
    _wait_consumers_ready(supervisor, settings, workers, stop)
    if live_args is not None:
        # A live producer that dies is started again: a new session, a new run, from a
        # snapshot. One that exits 2 (the gateway refused: key, symbol, dataset) is not.
        supervisor.start(
            "producer",
            ["produce", "--live", *live_args, "--summary", str(run_dir / "producer.json"),
             "--metrics-port", str(ports["producer"])],
            restart=True,
            one_shot=True,
            final_codes=frozenset({2, EXIT_BAD_INPUT}),
        )  # fmt: skip
        (run_dir / "ports.json").write_text(json.dumps(ports))
        return ports
    assert replay is not None
    pace = ["--rate", str(rate)] if rate else ["--speed", str(speed)] if speed else ["--max"]
    # One id for the run's replay: a producer restarted after it died resumes the same replay
    # after what the records topic holds (producer/resume.py), so each record is there once.
    replay_id = f"mbo-run-{uuid.uuid4().hex[:16]}"
    supervisor.start(
        "producer",
        ["produce", str(replay), *pace, "--loop", str(loop), "--summary",
         str(run_dir / "producer.json"), "--metrics-port", str(ports["producer"]),
         "--replay-id", replay_id],
        restart=True,
        one_shot=True,
        final_codes=frozenset({EXIT_BAD_INPUT}),
    )  # fmt: skip
    (run_dir / "ports.json").write_text(json.dumps(ports))
    return ports


def _api_port(settings: Any) -> int:
    """MBO_API__PORT, or a free port if something else listens there (said on stderr)."""
    import socket  # noqa: PLC0415

    from mbo_core.kafka.probes import free_port  # noqa: PLC0415

    port = int(settings.api.port)
    with socket.socket() as probe:
        try:
            probe.bind((settings.api.host, port))
        except OSError:
            chosen = free_port()
            print(f"mbo run: port {port} is taken, the API uses {chosen}", file=sys.stderr)
            return chosen
    return port


def _wait_consumers_ready(
    supervisor: Supervisor, settings: Any, workers: int, stop: list[int], timeout: float = 180
) -> None:
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    from mbo_core.kafka.clients import OffsetWatch  # noqa: PLC0415

    kafka = settings.kafka

    async def wait() -> None:
        deadline = time.monotonic() + timeout
        # One admin client for the whole wait, which looks ten times a second: a new client per
        # look cost a connection, metadata and a coordinator lookup, in `mbo run` and in the
        # broker. A look that fails or hangs (the broker restarted) gets new connections.
        async with OffsetWatch(settings) as watch:

            async def joined() -> bool:
                processors = await watch.members(kafka.processor_group_id)
                sink = await watch.members(kafka.sink_group_id)
                return processors == ("Stable", workers) and sink == ("Stable", 1)

            while True:
                try:
                    if await asyncio.wait_for(joined(), OFFSETS_WAIT_S):
                        return
                except (KafkaError, TimeoutError):
                    await watch.reset()
                if stop:
                    raise MboError("interrupted while the stages were starting")
                supervisor.check()
                if time.monotonic() > deadline:
                    raise MboError(
                        f"the consumers did not join within {timeout:.0f} s; see the logs"
                    )
                await asyncio.sleep(0.1)

    asyncio.run(wait())


def _stop_on_signals() -> list[int]:
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return received


def _say_drained(supervisor: Supervisor, progress: RunProgress) -> None:
    """The line that says the replay is over: every record the topic holds is stored (the
    drain check), so all of the file's unless the replay stopped part-way."""
    progress.clear()
    if supervisor.children["producer"].error is not None:
        return  # said on its own: a partial load
    if progress.total is None:  # a live session: as many records as it received
        sent = _producer_summary(supervisor.run_dir).get("records_sent")
        count = f"{sent:,} records" if isinstance(sent, int) else "what it received"
        print(f"mbo run: live session stopped: {count} sent; everything is in ClickHouse",
              file=sys.stderr)  # fmt: skip
        return
    print(
        f"mbo run: replay finished: {progress.total or 0:,} records replayed; everything is in "
        "ClickHouse",
        file=sys.stderr,
    )


def _serve_live(
    supervisor: Supervisor,
    settings: Any,
    ports: dict[str, int],
    stop: list[int],
    timeout: float,
    progress: RunProgress,
) -> dict[str, Any]:
    """Until SIGINT/SIGTERM: the live session streams, with the progress line. Then the producer
    stops first (it sends everything it received and the end-of-stream markers), the pipeline
    drains, the stages stop and the run's figures are returned. A session the gateway ended (an
    error, no reconnection possible) ends the run with the gateway's line (exit 2)."""
    print("mbo run: live; Ctrl-C stops the session, then waits until everything it received is "
          "in ClickHouse (a second Ctrl-C stops at once)", file=sys.stderr)  # fmt: skip
    producer = supervisor.children["producer"]
    while not stop and not producer.finished:
        supervisor.check()
        progress.update()
        time.sleep(0.5)
    progress.clear()
    if producer.error is not None:
        raise InputError(producer.error)
    if stop:
        print("mbo run: stopping the live session", file=sys.stderr)
        stop.clear()
        supervisor.stop("producer")
    return _drain_and_report(supervisor, settings, ports, stop, timeout, progress)


def _serve_until_stopped(
    supervisor: Supervisor, settings: Any, stop: list[int], progress: RunProgress
) -> None:
    """Serve until Ctrl-C: with the progress line until the replay drained, then a line saying
    so, then quietly."""
    print("mbo run: serving; Ctrl-C stops every stage", file=sys.stderr)
    try:
        asyncio.run(_wait_drained(supervisor, settings, stop, math.inf, progress))
    except MboError:
        progress.clear()
        if not stop:
            raise
    else:
        _say_drained(supervisor, progress)
    said = False
    while not stop:
        supervisor.check()
        error = supervisor.children["producer"].error
        if error is not None and not said:
            said = True
            print(f"mbo run: the replay stopped part-way: {error}; serving what was loaded",
                  file=sys.stderr)  # fmt: skip
        time.sleep(0.5)
    print("mbo run: stopping", file=sys.stderr)


async def _wait_drained(
    supervisor: Supervisor,
    settings: Any,
    stop: list[int],
    timeout: float,
    progress: RunProgress | None = None,
) -> float:
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    from mbo_core.kafka.clients import OffsetWatch, probe_bootstrap  # noqa: PLC0415

    topics = settings.topics
    groups = settings.kafka

    def caught_up(ends: dict[int, int], committed: dict[int, int]) -> bool:
        return all(end == 0 or committed.get(p, -1) >= end for p, end in ends.items())

    async def drained_state(watch: OffsetWatch) -> tuple[Any, ...] | None:
        """Every position, if every consumer has caught up with every topic; else None.

        Cheapest first, stopping at the first lag: the output topics' ends cost a fetch that
        returns (and decodes) their newest data, which is only worth it once the processor has
        committed every record.
        """
        records = await watch.ends(topics.records.name)
        parts = sorted(records)
        processed = await watch.committed(groups.processor_group_id, topics.records.name, parts)
        if not caught_up(records, processed):
            return None
        stored = await watch.committed(groups.sink_group_id, topics.records.name, parts)
        if not caught_up(records, stored):
            return None
        outputs = []
        for topic in (topics.bbo.name, topics.snapshots.name):
            ends = await watch.ends(topic)
            committed = await watch.committed(groups.sink_group_id, topic, sorted(ends))
            if not caught_up(ends, committed):
                return None
            outputs.append((ends, committed))
        return records, processed, stored, outputs

    deadline = time.monotonic() + timeout
    previous: tuple[Any, ...] | None = None
    broker = _BrokerWatch(probe_bootstrap(settings))
    # One consumer and one admin client for the whole wait (see OffsetWatch).
    async with OffsetWatch(settings) as watch:
        while time.monotonic() < deadline:
            if stop:
                raise MboError("interrupted before the pipeline drained")
            if supervisor.check():
                await watch.reset()  # the broker was restarted: new connections
            await broker.check()
            if progress is not None:
                await asyncio.to_thread(progress.update)
            if supervisor.children["producer"].finished:
                try:
                    # Bounded: a dead broker holds a request for its whole timeout (40 s), and
                    # the supervisor, which restarts it, runs in this loop.
                    state = await asyncio.wait_for(drained_state(watch), OFFSETS_WAIT_S)
                except (KafkaError, TimeoutError) as exc:
                    log.warning("reading offsets failed (%r); asking again", exc)
                    await watch.reset()
                    state = None
                if state is not None and state == previous:
                    return time.time()
                previous = state
            await asyncio.sleep(0.5)
    waiting = (
        "the producer is still replaying"
        if not supervisor.children["producer"].finished
        else "the consumers have not committed the end of every topic"
    )
    raise MboError(
        f"the pipeline did not drain within {timeout:.0f} s: {waiting}; see "
        f"{supervisor.run_dir / 'logs'}"
    )


class _BrokerWatch:
    """Fails the drain wait once no bootstrap server answered Kafka for BROKER_AWAY_S: the
    stages cannot make progress then, and waiting out --timeout (30 min) would only hide it.
    bootstrap None (TLS/SASL listeners, which the probe cannot ask): it watches nothing."""

    BROKER_AWAY_S = 30.0
    EVERY_S = 2.0

    def __init__(self, bootstrap: str | None) -> None:
        self.bootstrap = bootstrap
        self.answered_at = time.monotonic()
        self.asked_at = 0.0

    async def check(self) -> None:
        from mbo_core.kafka.probes import bootstrap_answers  # noqa: PLC0415

        now = time.monotonic()
        if self.bootstrap is None or now - self.asked_at < self.EVERY_S:
            return
        self.asked_at = now
        if await asyncio.to_thread(bootstrap_answers, self.bootstrap):
            self.answered_at = time.monotonic()
            return
        away = time.monotonic() - self.answered_at
        if away > self.BROKER_AWAY_S:
            raise MboError(
                f"the Kafka broker at {self.bootstrap} has not answered for {away:.0f} s: no "
                "stage can make progress (is it running? see MBO_KAFKA__BOOTSTRAP_SERVERS)"
            )


def _producer_summary(run_dir: Path) -> dict[str, Any]:
    try:
        summary = json.loads((run_dir / "producer.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _scrape(host: str, port: int) -> str:
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError as exc:
        log.warning("could not read the sink's metrics: %s", exc)
        return ""
