"""`mbo generate`: a synthetic multi-instrument MBO stream as a genuine DBN file (see
docs/generator.md), optionally with the true final books it must rebuild to (`--expect`)."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mbo_core.errors import InputError

# Limits of the arguments (generator.core checks the same; importing it here would load the
# compiled generator for every `mbo` command).
MAX_INSTRUMENTS = 1_000
MAX_PUBLISHERS = 16
MAX_BOOKS = 4_000
MAX_RECORDS = 1_000_000_000
#: 2025-01-06T14:30:00Z, generator.core.DEFAULT_START_NS.
DEFAULT_START_NS = 1_736_173_800_000_000_000
_COUNT = re.compile(r"^(-?\d[\d_]*)([kKmM]?)$")
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000}


def generate(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="The DBN file to write: NAME.dbn.zst (zstd) or NAME.dbn."
        ),
    ] = None,
    instruments: Annotated[
        str, typer.Option("--instruments", "-n", metavar="N", help="Instruments (1-1000).")
    ] = "1",
    records: Annotated[
        str,
        typer.Option(
            "--records",
            "-m",
            metavar="M",
            help="Records in the file, exactly (10_000, 250k and 10M are fine too).",
        ),
    ] = "1M",
    publishers: Annotated[
        str,
        typer.Option(
            "--publishers", "-p", metavar="P", help="Publishers per instrument, each its own book."
        ),
    ] = "1",
    seed: Annotated[
        str, typer.Option("--seed", "-s", metavar="S", help="Random seed: same seed, same file.")
    ] = "0",
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            metavar="ISO",
            help="Start of the simulated clock, ISO 8601 (UTC unless an offset is given). "
            "Default 2025-01-06T14:30:00Z.",
        ),
    ] = None,
    expect: Annotated[
        Path | None,
        typer.Option("--expect", help="Also write the true final books here, as `mbo book -o`."),
    ] = None,
    depth: Annotated[
        str,
        typer.Option("--depth", "-d", metavar="N", help="Levels per side in --expect; 0 = all."),
    ] = "10",
) -> None:
    """Generate realistic MBO order flow for invented instruments as a DBN v3 file."""
    from generator.api import generate_file  # noqa: PLC0415 - heavy (numba): only when used
    from generator.core import GeneratorConfig  # noqa: PLC0415

    n_instruments = _count("--instruments", instruments, 1, MAX_INSTRUMENTS)
    n_publishers = _count("--publishers", publishers, 1, MAX_PUBLISHERS)
    if n_instruments * n_publishers > MAX_BOOKS:
        raise InputError(f"--instruments x --publishers must be at most {MAX_BOOKS:,}")
    config = GeneratorConfig(
        instruments=n_instruments,
        records=_count("--records", records, 1, MAX_RECORDS),
        publishers=n_publishers,
        seed=_count("--seed", seed, 0, (1 << 63) - 1),
        start_ns=_start_ns(start),
    )
    levels = _count("--depth", depth, 0, 1_000_000)
    target = _output_path(output)
    expect_path = _expect_path(expect, target)
    with _progress() as on_progress:
        try:
            result = generate_file(
                target, config, depth=levels, expect=expect_path, on_progress=on_progress
            )
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            raise InputError(f"cannot write{where}: {exc.strerror or exc}") from exc
    rate = result.records / result.seconds if result.seconds > 0 else 0.0
    books = len(result.final["books"])
    print(
        f"{result.records:,} records, {result.events:,} events, {books} books -> {target} "
        f"({result.bytes:,} bytes, {result.seconds:.1f} s, {rate:,.0f} records/s)",
        file=sys.stderr,
    )


def _count(option: str, text: str, low: int, high: int) -> int:
    """An integer option: digits with optional _ separators and a k or M suffix, in [low, high]."""
    match = _COUNT.match(text.strip())
    if match is None:
        raise InputError(
            f"{option}: expected a whole number such as 1000, 250k or 10M, not {text!r}"
        )
    value = int(match.group(1).replace("_", "")) * _SCALE[match.group(2).lower()]
    if not low <= value <= high:
        raise InputError(f"{option} must be between {low:,} and {high:,}, not {value:,}")
    return value


def _start_ns(text: str | None) -> int:
    if text is None:
        return DEFAULT_START_NS
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"--start: not an ISO 8601 date or time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if not dt.datetime(1971, 1, 1, tzinfo=dt.UTC) <= when <= dt.datetime(2200, 1, 1, tzinfo=dt.UTC):
        raise InputError(f"--start must be between 1971 and 2200, not {text!r}")
    seconds = int(when.timestamp())
    return seconds * 1_000_000_000 + when.microsecond * 1_000


def _writable_file(option: str, path: Path) -> Path:
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: directory {parent} is not writable")
    return path


def _output_path(output: Path | None) -> Path:
    if output is None:
        raise InputError("-o/--output is required: the DBN file to write (.dbn or .dbn.zst)")
    if not output.name.endswith((".dbn", ".dbn.zst")) or output.name in (".dbn", ".dbn.zst"):
        raise InputError(f"-o {output}: the name must end in .dbn or .dbn.zst")
    return _writable_file("-o", output)


def _expect_path(expect: Path | None, target: Path) -> Path | None:
    if expect is None:
        return None
    if expect.resolve() == target.resolve():
        raise InputError("--expect must name a different file than -o")
    return _writable_file("--expect", expect)


@contextmanager
def _progress() -> Iterator[Callable[[int, int], None] | None]:
    """on_progress for generate_file: a records bar on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    with Progress(
        TextColumn("generate"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        task: TaskID | None = None

        def update(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = progress.add_task("generate", total=total)
            progress.update(task, completed=done)

        yield update
