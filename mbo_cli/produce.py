"""`mbo produce FILE`: replay a DBN MBO file into the Kafka records topic (docs/producer.md)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from mbo_cli.output import atomic_output, progress_bar
from mbo_core.errors import InputError

#: Exit code when the file turned out bad during the replay (sysexits' EX_DATAERR): what was
#: sent before stays, the replay cannot go on.
EXIT_BAD_INPUT = 65


def produce(
    file: Annotated[Path, typer.Argument(help="DBN MBO file (.dbn or .dbn.zst).")],
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
) -> None:
    """Replay FILE into the records topic: chunks of whole events keyed by instrument.

    SIGINT/SIGTERM stop it cleanly: complete events already read are sent, the summary says
    interrupted, and the exit code is 0.
    """
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
