"""Output helpers shared by the commands: files that appear only when complete, progress bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from mbo_core.errors import InputError


@contextmanager
def atomic_output(path: Path | None) -> Iterator[TextIO | None]:
    """A text file written under a temporary name and renamed to `path` only on success.

    On any error the temporary file is removed, so a file at `path` is always complete.
    Yields None when path is None.
    """
    if path is None:
        yield None
        return
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        out = tmp.open("w", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    try:
        with out:
            yield out
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n_bytes)`; draws a bar on stderr only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield lambda _n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
