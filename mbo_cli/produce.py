"""`mbo produce FILE`: replay a DBN MBO file into the Kafka records topic (docs/producer.md);
`mbo produce --live ...`: stream a Databento Live session into it (docs/databento.md)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from mbo_cli import databento_options as db_options
from mbo_cli.databento_options import SymbolType
from mbo_cli.output import atomic_output, progress_bar
from mbo_core.errors import InputError

#: Exit code when the file turned out bad during the replay (sysexits' EX_DATAERR): what was
#: sent before stays, the replay cannot go on.
EXIT_BAD_INPUT = 65


def produce(
    file: Annotated[
        Path | None, typer.Argument(help="DBN MBO file (.dbn or .dbn.zst); none with --live.")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Send R records per second, evenly, over the whole run."),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option("--speed", help="Replay at X times the recorded pace (ts_recv)."),
    ] = None,
    max_: Annotated[
        bool, typer.Option("--max", help="Send flat out (the default without --rate/--speed).")
    ] = False,
    loop: Annotated[
        int,
        typer.Option(
            "--loop", help="Replay the file N times, with a Clear of every book between copies."
        ),
    ] = 1,
    summary: Annotated[
        Path | None, typer.Option("--summary", help="Write the final summary as JSON here.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve Prometheus /metrics on this port (0: off; default "
            "MBO_METRICS__PRODUCER_PORT).",
        ),
    ] = None,
    replay_id: Annotated[
        str | None,
        typer.Option(
            "--replay-id",
            help="This replay's id, written in every message. Run again with the same id after "
            "a crash and the replay resumes after what the topic holds (default: a new id).",
        ),
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Stream a Databento Live session (--dataset, --symbols) instead of a file, "
            "until SIGINT/SIGTERM (docs/databento.md).",
        ),
    ] = False,
    dataset: db_options.Dataset = None,
    symbols: db_options.Symbols = None,
    stype_in: db_options.StypeIn = SymbolType.raw_symbol,
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            help="--live: replay from this time (within the last 24 hours; ISO 8601, UTC unless "
            "it has an offset, or UNIX ns) instead of starting from a snapshot.",
        ),
    ] = None,
    snapshot: db_options.Snapshot = None,
    record: db_options.Record = None,
) -> None:
    """Replay FILE into the records topic: chunks of whole events keyed by instrument.

    With --live, stream a Databento Live session instead (key: DATABENTO_API_KEY or
    MBO_DATABENTO__API_KEY), in the same messages, one run per connection.

    SIGINT/SIGTERM stop it cleanly: complete events already read are sent, the summary says
    interrupted, and the exit code is 0.
    """
    live_options = {
        "--dataset": dataset,
        "--symbols": symbols,
        "--start": start,
        "--snapshot": snapshot,
        "--record": record,
    }
    if live:
        if file is not None:
            raise InputError(f"give a FILE or --live, not both ({file})")
        file_options = {
            "--rate": rate,
            "--speed": speed,
            "--max": max_ or None,
            "--loop": loop if loop != 1 else None,
            "--replay-id": replay_id,
        }
        given = [name for name, value in file_options.items() if value is not None]
        if given:
            raise InputError(
                f"{given[0]} is for file replays: a live session comes at the market's pace, "
                "once, with a new replay id"
            )
        if dataset is None or symbols is None:
            raise InputError("--live needs --dataset and --symbols")
        _produce_live(dataset, symbols, stype_in, start, snapshot, record, summary, metrics_port)
        return
    given = [name for name, value in live_options.items() if value is not None]
    if given:
        raise InputError(f"{given[0]} is for --live")
    if file is None:
        raise InputError("give a DBN MBO FILE to replay, or --live")
    # Heavy imports (numpy first, aiokafka later) only when this command runs, and bad
    # options fail before the Kafka client is even imported.
    from producer.pacing import Pacing  # noqa: PLC0415

    Pacing.validate(rate=rate, speed=speed, loops=loop, max_=max_)
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise InputError(f"--metrics-port must be 0 (off) or a port number, not {metrics_port}")

    if replay_id is not None and not (0 < len(replay_id) <= 200 and replay_id.isprintable()):
        raise InputError("--replay-id must be 1-200 printable characters")
    from mbo_core.dbn import open_mbo  # noqa: PLC0415

    source = open_mbo(file)  # bad input fails before anything connects

    from mbo_core.logs import configure_logging  # noqa: PLC0415
    from mbo_core.records import MBO_DTYPE  # noqa: PLC0415
    from mbo_core.settings import load_settings  # noqa: PLC0415
    from producer.app import run_produce, start_metrics  # noqa: PLC0415

    settings = load_settings()
    configure_logging(settings.log, "producer")
    start_metrics(settings, metrics_port)

    per_copy = source.record_count
    total = per_copy * MBO_DTYPE.itemsize * loop if per_copy is not None else None
    with (
        progress_bar(f"produce {file.name}", total=total) as advance,
        _logs_to_current_stderr(),
    ):
        try:
            result = run_produce(
                settings,
                file,
                rate=rate,
                speed=speed,
                loops=loop,
                progress=lambda records: advance(records * MBO_DTYPE.itemsize),
                # None: a new replay, with a new id and no resume check.
                replay_id=replay_id,
            )
        except InputError as exc:
            # The file went bad after it was checked (mid-way): starting again cannot help,
            # unlike a Kafka failure; a distinct code tells a supervisor so (mbo run).
            print(f"mbo: error: {exc}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    if summary is not None:
        with atomic_output(summary) as out:
            assert out is not None
            json.dump(result.to_json(), out, indent=1)
            out.write("\n")
    print(f"mbo produce: {result.line()}", file=sys.stderr)


def _produce_live(
    dataset: str,
    symbols: str,
    stype_in: SymbolType,
    start: str | None,
    snapshot: bool | None,
    record: Path | None,
    summary: Path | None,
    metrics_port: int | None,
) -> None:
    """`mbo produce --live`: checked before anything connects, then the session until a signal
    (exit 0) or an error of the gateway (one line, exit 2)."""
    from mbo_core.databento.live import LiveRequest  # noqa: PLC0415

    request = LiveRequest.of(dataset, symbols, stype_in.value, start, snapshot)
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise InputError(f"--metrics-port must be 0 (off) or a port number, not {metrics_port}")
    if record is not None and record.exists():
        raise InputError(f"{record}: exists; --record writes a new file")

    from mbo_core.logs import configure_logging  # noqa: PLC0415
    from mbo_core.settings import load_settings  # noqa: PLC0415
    from producer.app import start_metrics  # noqa: PLC0415
    from producer.live import run_live  # noqa: PLC0415

    settings = load_settings()
    configure_logging(settings.log, "producer")
    start_metrics(settings, metrics_port)
    key = settings.databento.api_key
    result = run_live(
        settings,
        request,
        key=key.get_secret_value() if key is not None else None,
        record=record,
    )
    if summary is not None:
        with atomic_output(summary) as out:
            assert out is not None
            json.dump(result.to_json(), out, indent=1)
            out.write("\n")
    print(f"mbo produce: {result.line()}", file=sys.stderr)


@contextmanager
def _logs_to_current_stderr() -> Iterator[None]:
    """Log handlers write to sys.stderr as it is now: while a progress bar is drawn, that is
    the bar's proxy, which prints log lines above the bar instead of through it."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    previous = [(handler, handler.setStream(sys.stderr)) for handler in handlers]
    try:
        yield
    finally:
        for handler, stream in previous:
            if stream is not None:
                handler.setStream(stream)
