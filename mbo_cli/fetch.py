"""`mbo fetch`: Databento MBO data from the Historical API into a DBN file, paid for once.

The cost is quoted first (`metadata.get_cost`); a request above the cost limit needs `--yes`.
Downloads are kept in the cache (mbo_core.databento.historical), so the same request again is
served from there without a request to Databento. The file's path is printed on stdout (the
`-o` file, else the cached one): `mbo book "$(mbo fetch ...)"` works.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
import zstandard
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from mbo_cli.databento_options import SYMBOLS_HELP, StypeIn, SymbolType
from mbo_core.databento.historical import (
    CachedFile,
    DownloadCache,
    RangeRequest,
    format_time,
    usd,
)
from mbo_core.databento.historical import fetch as fetch_range
from mbo_core.errors import InputError
from mbo_core.settings import Settings, load_settings


def fetch(
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset code, e.g. GLBX.MDP3.")],
    symbols: Annotated[
        str,
        typer.Option(
            "--symbols",
            help=SYMBOLS_HELP,
        ),
    ],
    start: Annotated[
        str,
        typer.Option(
            "--start",
            help="Inclusive start: ISO 8601 (UTC unless it has an offset; a date is its "
            "midnight) or UNIX nanoseconds.",
        ),
    ],
    end: Annotated[str, typer.Option("--end", help="Exclusive end, written as --start.")],
    stype_in: StypeIn = SymbolType.raw_symbol,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the file here too: a name ending in .zst gets the zstd DBN as the "
            "gateway sent it (a read-only hard link to the cached file where possible), any "
            "other name the plain DBN. Default: only the cached file.",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Pay for a request that costs more than the limit.")
    ] = False,
    cost_limit: Annotated[
        float | None,
        typer.Option(
            "--cost-limit",
            min=0,
            help="Cost limit in USD for this run (default: MBO_DATABENTO__COST_LIMIT_USD, 5).",
        ),
    ] = None,
) -> None:
    """Download Databento MBO data into a DBN file that `mbo book` and `mbo run --replay` read.

    Prints the cost first; above the cost limit, nothing is downloaded without --yes.
    The same request again is served from the cache, without asking Databento.
    API key: DATABENTO_API_KEY or MBO_DATABENTO__API_KEY (docs/databento.md).
    """
    request = RangeRequest.of(dataset, symbols, stype_in.value, start, end)
    cached = fetch_file(load_settings(), request, yes=yes, cost_limit=cost_limit, notice=_notice)
    if output is not None:
        _export(cached.path, output)
        _notice(f"-> {output}")
    print(output if output is not None else cached.path)


def _notice(line: str) -> None:
    print(f"mbo fetch: {line}", file=sys.stderr, flush=True)


def fetch_file(
    settings: Settings,
    request: RangeRequest,
    *,
    yes: bool,
    cost_limit: float | None,
    notice: Callable[[str], None],
) -> CachedFile:
    """The request's file in the download cache, fetched (cost first, above the limit only with
    `yes`) with a download bar on a terminal, or served from the cache; says which through
    `notice`. What `mbo fetch` and `mbo run --historical` both do."""
    key = settings.databento.api_key
    bar = _DownloadBar(f"fetch {request.dataset} {format_time(request.start)[:10]}")
    try:
        fetched = fetch_range(
            request,
            cache=DownloadCache(settings.databento_cache_dir),
            key=key.get_secret_value() if key is not None else None,
            gateway=settings.databento.historical_gateway,
            cost_limit_usd=settings.databento.cost_limit_usd if cost_limit is None else cost_limit,
            confirmed=yes,
            notice=notice,
            progress=bar.advance,
        )
    finally:
        bar.close()
    cached = fetched.file
    if fetched.from_cache:
        paid = f" for {usd(cached.cost_usd)}" if cached.cost_usd is not None else ""
        notice(
            f"served from cache, nothing paid now (fetched {cached.fetched_at}{paid}): "
            f"{cached.records:,} records, {cached.path}"
        )
    else:
        notice(f"{cached.size:,} bytes, {cached.records:,} records -> {cached.path}")
    return cached


class _DownloadBar:
    """A download bar on stderr, drawn only where stderr is a terminal, from the first byte on (not
    while the cost is asked for or a cache hit is served)."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task = TaskID(0)
        self._enabled = sys.stderr.isatty()

    def advance(self, n: int) -> None:
        if not self._enabled:
            return
        with self._lock:
            if self._progress is None:
                self._progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TimeElapsedColumn(),
                    console=Console(stderr=True),
                    transient=True,
                )
                self._progress.start()
                self._task = self._progress.add_task(self._description, total=None)
            self._progress.advance(self._task, n)

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None


def _export(cached: Path, output: Path) -> None:
    """The cached file at `output`, complete or not at all: linked or copied (.zst), else
    decompressed."""
    if output.is_dir():
        raise InputError(f"{output}: is a directory")
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        if output.name.endswith(".zst"):
            try:
                os.link(cached, tmp)
            except OSError:  # another file system, or links not allowed: a copy
                shutil.copyfile(cached, tmp)
        else:
            with cached.open("rb") as src, tmp.open("wb") as dst:
                reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
                shutil.copyfileobj(reader, dst, 1 << 20)
        tmp.replace(output)
    except OSError as exc:
        raise InputError(f"{output}: cannot write: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
