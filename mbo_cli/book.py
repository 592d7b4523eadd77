"""`mbo book FILE`: rebuild every book of a DBN MBO file and write the final books (and events)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from mbo_cli.output import atomic_output, progress_bar
from mbo_core.dbn import DEFAULT_BATCH_RECORDS, open_mbo
from mbo_core.errors import InputError

if TYPE_CHECKING:
    from mbo_core.schemas import BookJson

EVENTS_BATCH_RECORDS = 1 << 13


def book(
    file: Annotated[Path, typer.Argument(help="DBN MBO file (.dbn or .dbn.zst).")],
    depth: Annotated[
        int, typer.Option("--depth", "-d", help="Levels per side in the output; 0 = all levels.")
    ] = 10,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the final books as JSON here (default stdout)."),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events", help="Write one JSON line per F_LAST record (the book after each event)."
        ),
    ] = None,
) -> None:
    """Rebuild the order books of FILE exactly (Databento MBO rules) and report the final books."""
    if depth < 0:
        raise InputError(f"--depth must be 0 (all levels) or positive, not {depth}")
    # The engine loads compiled code; import it only when this command runs, not for `mbo infra`.
    from mbo_core.rebuild import rebuild_batches  # noqa: PLC0415

    source = open_mbo(file)
    with (
        atomic_output(events) as events_out,
        atomic_output(output) as final_out,
        progress_bar(f"book {file.name}", total=source.file_size) as advance,
    ):
        # Writing events is the slow part: smaller batches keep the progress bar honest.
        batch_records = EVENTS_BATCH_RECORDS if events else DEFAULT_BATCH_RECORDS
        result = rebuild_batches(
            source.batches(batch_records, progress=advance),
            source=str(file),
            depth=depth,
            symbols=source.symbols,
            on_event=_jsonl_writer(events_out) if events_out else None,
            # Instruments split over the cores (without --events, whose lines keep file order).
            workers=1 if events else len(os.sched_getaffinity(0)),
        )
        json.dump(result.to_json(), final_out or sys.stdout, indent=1)
        (final_out or sys.stdout).write("\n")
    if output is not None:
        print(
            f"{result.records:,} records, {result.events:,} events, "
            f"{len(result.books)} books -> {output}",
            file=sys.stderr,
        )


def _jsonl_writer(out: TextIO) -> Callable[[BookJson], None]:
    dumps = json.JSONEncoder(separators=(",", ":")).encode

    def write(line: BookJson) -> None:
        out.write(dumps(line))
        out.write("\n")

    return write
