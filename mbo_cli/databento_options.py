"""The command-line options naming Databento data, declared once for `mbo fetch`, `mbo produce
--live` and `mbo run --historical/--live` (docs/databento.md)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class SymbolType(StrEnum):
    raw_symbol = "raw_symbol"
    parent = "parent"
    continuous = "continuous"


SYMBOLS_HELP = (
    "Comma-separated symbols: CLX5,CLZ5 (raw_symbol), CL.FUT (parent), CL.c.0 (continuous)."
)

Dataset = Annotated[
    str | None, typer.Option("--dataset", help="Databento dataset code, e.g. GLBX.MDP3.")
]
Symbols = Annotated[str | None, typer.Option("--symbols", help=SYMBOLS_HELP)]
StypeIn = Annotated[SymbolType, typer.Option("--stype-in", help="The symbology of --symbols.")]
Snapshot = Annotated[
    bool | None,
    typer.Option(
        "--snapshot/--no-snapshot",
        help="--live: start every book from the gateway's MBO snapshot (the default without "
        "--start).",
    ),
]
Record = Annotated[
    Path | None,
    typer.Option(
        "--record",
        help="--live: also write the raw stream to this new DBN file (.dbn.zst: zstd), for "
        "`mbo book` and `mbo run --replay`.",
    ),
]
